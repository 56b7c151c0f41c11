"""Versioned prompt templates (raypipe.core.prompts, shared with SFT), applied with the model's own chat template."""
from __future__ import annotations

from raypipe.core.prompts import DEFAULT, SUFFIX, TEMPLATES, user_message  # noqa: F401  (the eval API)


def messages(problem: str, version: str = DEFAULT, system: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user_message(problem, version)}]


def render(tokenizer, msgs: list[dict]) -> str:
    """The prompt text for a completion engine: the chat template with the generation prompt opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in msgs) + "\n\n"
