"""A tiny Qwen2-style causal LM and a byte-level BPE tokenizer made locally: `--model tiny` without any hub.

The weights are random (seeded); the tokenizer is trained in milliseconds on a built-in text. Both are saved
in Hugging Face format so transformers, DeepSpeed and vLLM load them like any checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

TINY_VERSION = "1"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_CORPUS = """Let me solve the problem step by step. First, compute the sum of the numbers.
Perhaps we can try another approach. Alternatively, consider the equation x^2 + 3x + 2 = 0.
Wait, let me check the arithmetic again. So the answer is \\boxed{42}. The final answer is 17.
Therefore the probability is \\frac{1}{2} and the area is 3\\sqrt{3}/4. Hmm, maybe I should verify.
What is 12 + 30? Find the number of integers n such that 1 <= n <= 100. Please reason step by step,
and put your final answer within \\boxed{}. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } $ ^ _ , . ; : ! ?
"""


def default_dir() -> Path:
    base = os.environ.get("RAYPIPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "raypipe")
    return Path(base) / f"tiny-v{TINY_VERSION}"


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # The same normaliser and pre-tokenizer as Qwen2's, so loading it as Qwen2Tokenizer (which AutoTokenizer
    # does beside a qwen2 config) gives the same ids.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHATML
    return fast


def build_tiny(path: str | os.PathLike | None = None, hidden: int = 64, layers: int = 2, heads: int = 4,
               seed: int = 0, max_positions: int = 65536) -> str:
    """Write the tiny model and tokenizer to `path` (default: a per-user cache) and return the path."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    out = Path(path) if path else default_dir()
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return str(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=max_positions,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Name the tokenizer class so AutoTokenizer (and vLLM) do not load it as Qwen2Tokenizer, which re-splits digits.
    cfg_path = tmp / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHATML
    cfg_path.write_text(json.dumps(cfg, indent=1))
    gen = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    (tmp / "generation_config.json").write_text(json.dumps(gen))
    if out.exists() and (out / "config.json").exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def resolve_model(name_or_path: str) -> str:
    """'tiny' -> a locally built tiny model; anything else is returned unchanged (a path, s3:// URI or hub id).
    A local path (starting with /, . or ~) that is not there is a FileNotFoundError naming it, not a hub lookup."""
    if name_or_path == "tiny":
        return build_tiny()
    if name_or_path.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(name_or_path)):
        raise FileNotFoundError(f"model not found: {name_or_path}")
    return name_or_path


def load_tokenizer(path: str):
    """Load a tokenizer; a raypipe tiny tokenizer is loaded as the fast tokenizer it was saved as."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
