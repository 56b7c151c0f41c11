"""The organism's student: a small Qwen2-architecture causal LM initialised from scratch, with a byte-level BPE
tokenizer fit to the task's text, saved in Hugging Face format (like `raypipe.tiny`).

Like a Qwen2.5 base checkpoint, its EOS (`<|endoftext|>`) is not its chat template's end-of-turn token
(`<|im_end|>`): SFT trains the end-of-turn token, and evaluation must stop on it. Every whole number the task uses
is one token, with or without a space before it: a step's arithmetic is then one prediction, which a small model
learns in minutes, where digit by digit it needs far longer. The numbers are added tokens over a BPE with Qwen2's own
pre-tokenizer, so that every loader gives the same ids: transformers' AutoTokenizer (which loads a qwen2 checkpoint's
tokenizer as Qwen2Tokenizer, with Qwen2's digit-splitting pre-tokenizer, whatever tokenizer_class says), vLLM's, and
raypipe's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from pydantic import ConfigDict, Field

from raypipe.core.settings import SettingsGroup

from raypipe.tiny import CHATML, QWEN2_PRETOKENIZE_REGEX

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


class StudentSettings(SettingsGroup):
    """The student's architecture and vocabulary."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(96, ge=16, description="hidden size")
    layers: int = Field(3, ge=1, description="transformer layers")
    heads: int = Field(3, ge=1, description="attention heads (key/value heads: half of them); hidden / heads is "
                       "the head size, which vLLM supports from 32")
    intermediate: int | None = Field(None, ge=16, description="MLP width (default: 4 x hidden)")
    vocab_size: int = Field(512, ge=300, description="BPE vocabulary for the task's text, on top of one token per "
                            "whole number the task uses")
    max_positions: int = Field(1024, ge=64, description="longest sequence the model is built for")


def build_tokenizer(texts: Iterable[str], vocab_size: int, max_number: int = 0):
    """A byte-level BPE fit to `texts`, plus one token for each whole number up to `max_number` (" 17" and "17")."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.add_tokens([AddedToken(t, normalized=False, special=False)
                     for i in range(max_number + 1) for t in (f" {i}", str(i))])
    fast.chat_template = CHATML
    return fast


def student_config(settings: StudentSettings, max_number: int, vocab: int | None = None) -> dict:
    """The student's Qwen2 config.json fields; `vocab` defaults to the most the tokenizer can hold."""
    return {"vocab_size": vocab or settings.vocab_size + 2 * (max_number + 1), "hidden_size": settings.hidden,
            "intermediate_size": settings.intermediate or 4 * settings.hidden, "num_hidden_layers": settings.layers,
            "num_attention_heads": settings.heads, "num_key_value_heads": max(1, settings.heads // 2),
            "max_position_embeddings": settings.max_positions, "tie_word_embeddings": True}


def build_student(path: str | os.PathLike, texts: Iterable[str], settings: StudentSettings, seed: int = 0,
                  max_number: int = 0) -> str:
    """Fit the tokenizer to `texts`, initialise the model with `seed`, save both to `path`; returns the path."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts, settings.vocab_size, max_number)
    config = Qwen2Config(**student_config(settings, max_number, len(tokenizer)),
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id, torch_dtype="float32")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # not Qwen2Tokenizer, which re-splits digits
    cfg["chat_template"] = CHATML
    cfg_path.write_text(json.dumps(cfg, indent=1))
    # As in a base checkpoint: the generation config knows EOS only, not the chat template's end of turn.
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id,
                                                            "pad_token_id": tokenizer.pad_token_id}))
    return str(out)


def parameter_count(path: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())
