"""Versioned prompt templates (raypipe.core.prompts, shared with SFT), applied with the model's own chat template."""
from __future__ import annotations

from raypipe.core.prompts import DEFAULT, PROMPTS, SUFFIX, user_message  # noqa: F401  (the eval API)


def messages(problem: str, version: str = DEFAULT, system: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user_message(problem, version)}]


def render(tokenizer, msgs: list[dict]) -> str:
    """The prompt text for a completion engine: the chat template with the generation prompt opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in msgs) + "\n\n"


_TURN_PROBE = "\x00raypipe-turn\x00"


def stop_token_ids(tokenizer, generation_eos: int | list[int] | None = None) -> list[int]:
    """The tokens that end a reply: EOS (the tokenizer's and the generation config's) and the chat template's
    end-of-turn token. A base checkpoint (Qwen2.5 base: EOS `<|endoftext|>`, turns closed by `<|im_end|>`) fine-tuned
    on chat-rendered data ends its reply with the end-of-turn token, never with EOS."""
    extra = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    ids = [i for i in [tokenizer.eos_token_id, *extra] if i is not None]
    if getattr(tokenizer, "chat_template", None):
        convo = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _TURN_PROBE}]
        text = tokenizer.apply_chat_template(convo, tokenize=False)
        after = text[text.find(_TURN_PROBE) + len(_TURN_PROBE):] if _TURN_PROBE in text else ""
        first = tokenizer(after, add_special_tokens=False)["input_ids"][:1] if after.strip() else []
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        ids += [i for i in first if i in special]
    return list(dict.fromkeys(ids))


def strip_stops(text: str, stops: list[str]) -> str:
    """The reply without the stop tokens' text at its end (engines that decode special tokens leave them there)."""
    changed = True
    while changed:
        changed = False
        for s in stops:
            if s and text.endswith(s):
                text, changed = text[: -len(s)], True
    return text
