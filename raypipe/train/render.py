"""Prompt/response rendering and tokenization with loss only on the response; the over-length policy."""
from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100

# Named templates for base models without a chat template: (prompt format, response suffix added before EOS).
TEMPLATES = {
    "chatml": ("<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n"),
    "plain": ("Problem:\n{problem}\n\nSolution:\n", ""),
}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class Rendered:
    example: Example | None
    status: str  # ok | truncated | dropped_overlong | empty


def split_prompt_response(tokenizer, problem: str, response: str, template: str = "auto") -> tuple[str, str]:
    """(prompt text, completion text): the completion is what the model learns to produce, end marker included."""
    if template == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: pass --template chatml|plain")
        user = [{"role": "user", "content": problem}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
        return prompt, full[len(prompt):]
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: auto, {', '.join(TEMPLATES)}")
    fmt, suffix = TEMPLATES[template]
    return fmt.format(problem=problem), response + suffix


def render(tokenizer, problem: str, response: str, max_len: int, overlong: str = "drop",
           template: str = "auto") -> Rendered:
    """Token ids and labels (-100 on the prompt) of one trajectory, within max_len tokens.

    Over-length rows are dropped (default: a cut CoT teaches the model to stop mid-thought) or, with
    overlong="truncate", cut at max_len (no EOS then). A prompt that alone fills max_len is always dropped.
    """
    if not problem or not response:
        return Rendered(None, "empty")
    prompt, completion = split_prompt_response(tokenizer, problem, response, template)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if template != "auto" and tokenizer.eos_token_id is not None and (not c or c[-1] != tokenizer.eos_token_id):
        c = c + [tokenizer.eos_token_id]
    status = "ok"
    if len(p) + len(c) > max_len:
        if overlong != "truncate" or len(p) >= max_len - 1:
            return Rendered(None, "dropped_overlong")
        c = c[: max_len - len(p)]
        status = "truncated"
    return Rendered(Example(p + c, [IGNORE] * len(p) + c), status)
