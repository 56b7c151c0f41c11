"""Versioned prompt templates, applied with the model's own chat template."""
from __future__ import annotations

SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = {
    "v1": "{problem}\n" + SUFFIX,  # the default (Qwen2.5-Math / DeepSeek-R1 evaluation prompt)
    "v1-raw": "{problem}",
}
DEFAULT = "v1"


def user_message(problem: str, version: str = DEFAULT) -> str:
    if version not in TEMPLATES:
        raise ValueError(f"unknown prompt template '{version}'; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[version].replace("{problem}", problem)


def messages(problem: str, version: str = DEFAULT, system: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user_message(problem, version)}]


def render(tokenizer, msgs: list[dict]) -> str:
    """The prompt text for a completion engine: the chat template with the generation prompt opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in msgs) + "\n\n"
