"""The assistant turn SFT trains on and the loss probe scores: the canonical reasoning and final part (the record's
`thinking` and `final` columns) laid out as `<think>\\n{thinking}\\n</think>\\n\\n{final}` (the tags and separators
are settings), rendered through the chat template, tokenized with loss only on the response; the over-length
policy. One rendering for every input markup, so the same trace trains identically whatever it came in.
"""
from __future__ import annotations

from dataclasses import dataclass

from raypipe.core.registry import Registry

IGNORE = -100
THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"


@dataclass(frozen=True)
class ChatTemplate:
    """A named template for base models without a chat template of their own."""

    name: str
    prompt: str  # the prompt, with {problem}
    suffix: str  # after the response, before EOS


CHAT_TEMPLATES: Registry[ChatTemplate] = Registry("chat template")
CHAT_TEMPLATES.add("chatml", ChatTemplate("chatml", "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n",
                                          "<|im_end|>\n"))
CHAT_TEMPLATES.add("plain", ChatTemplate("plain", "Problem:\n{problem}\n\nSolution:\n", ""))


class ReasoningDropped(ValueError):
    """The chat template left the reasoning out of the rendered assistant turn."""


@dataclass(frozen=True)
class AssistantFormat:
    """The assistant turn: think_open + thinking + think_close + final; the final part alone without reasoning."""

    think_open: str = THINK_OPEN
    think_close: str = THINK_CLOSE
    prompt_version: str = "v1-raw"  # the user turn (raypipe.core.prompts); RenderSettings passes its setting

    @property
    def layout(self) -> str:
        return f"{self.think_open}{{thinking}}{self.think_close}{{final}}"

    def text(self, thinking: str | None, final: str | None) -> tuple[str, tuple[int, int] | None, str]:
        """(assistant turn, span of the reasoning in it, kind). Kinds: `thinking`; `final_only` (no reasoning);
        `unmarked` (a response without reasoning markup is both its reasoning and its final part: rendered once)."""
        t, f = (thinking or "").strip(), (final or "").strip()
        if not t:
            return f, None, "final_only"
        if t == f:
            return f, (0, len(f)), "unmarked"
        start = len(self.think_open)
        return self.think_open + t + self.think_close + f, (start, start + len(t)), "thinking"


@dataclass
class RenderedText:
    prompt: str
    completion: str  # what the model learns to produce, end marker included
    thinking_span: tuple[int, int] | None  # character span of the canonical reasoning inside `completion`
    kind: str  # thinking | final_only | unmarked (AssistantFormat.text)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class Rendered:
    example: Example | None
    status: str  # ok | truncated | dropped_overlong | empty
    kind: str = ""
    tokens_cut: int = 0  # completion tokens removed by truncation (the answer is among them)


def split_prompt_response(tokenizer, problem: str, response: str, template: str = "auto") -> tuple[str, str]:
    """(prompt text, completion text) of a user turn and an assistant turn given as text."""
    if template == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: pass --template chatml|plain")
        user = [{"role": "user", "content": problem}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
        return prompt, full[len(prompt):]
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown template {template!r}: auto, {', '.join(CHAT_TEMPLATES.names())}")
    named = CHAT_TEMPLATES.get(template)
    return named.prompt.format(problem=problem), response + named.suffix


def render_text(tokenizer, problem: str, thinking: str | None, final: str | None, template: str = "auto",
                fmt: AssistantFormat = AssistantFormat()) -> RenderedText:
    """The prompt and completion of one trajectory. ReasoningDropped when the chat template left the reasoning out
    of the assistant turn (Qwen3 / DeepSeek-R1 style templates strip everything before `</think>`)."""
    from raypipe.core.prompts import user_message

    content, span, kind = fmt.text(thinking, final)
    prompt, completion = split_prompt_response(tokenizer, user_message(problem, fmt.prompt_version), content, template)
    if span is not None:
        at = completion.find(content)
        if at >= 0:
            span = (at + span[0], at + span[1])
        else:  # the template reformatted the turn: find the reasoning itself
            reasoning = content[span[0]:span[1]]
            at = completion.find(reasoning)
            if at < 0:
                name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
                raise ReasoningDropped(
                    f"template {template!r} (the chat template of {name}) drops the reasoning from the assistant "
                    "turn: the thinking text is not in the rendered conversation (templates such as Qwen3's or "
                    "DeepSeek-R1's strip everything before </think> in assistant turns). Train with --template chatml "
                    "(or plain), or set --think-open/--think-close to tags this template keeps")
            span = (at, at + len(reasoning))
    return RenderedText(prompt, completion, span, kind)


def encode(tokenizer, rendered: RenderedText, template: str = "auto", offsets: bool = False):
    """(prompt ids, completion ids, completion token character offsets or None). A named template ends with EOS."""
    p = tokenizer(rendered.prompt, add_special_tokens=False)["input_ids"]
    enc = tokenizer(rendered.completion, add_special_tokens=False, return_offsets_mapping=offsets)
    c = list(enc["input_ids"])
    off = [tuple(o) for o in enc["offset_mapping"]] if offsets else None
    eos = tokenizer.eos_token_id
    if template != "auto" and eos is not None and (not c or c[-1] != eos):
        c.append(eos)
        if off is not None:
            off.append((len(rendered.completion), len(rendered.completion)))
    return p, c, off


def render(tokenizer, problem: str, thinking: str | None, final: str | None, max_len: int, overlong: str = "drop",
           template: str = "auto", fmt: AssistantFormat = AssistantFormat(), min_kept: int = 2) -> Rendered:
    """Token ids and labels (-100 on the prompt) of one trajectory, within max_len tokens.

    Over-length rows are dropped (default: a cut CoT teaches the model to stop mid-thought) or, with
    overlong="truncate", cut at max_len (no EOS then, and no answer: the final part comes last). A row that would
    keep fewer than `min_kept` completion tokens is dropped all the same.
    """
    if not problem or not ((thinking or "").strip() or (final or "").strip()):
        return Rendered(None, "empty")
    text = render_text(tokenizer, problem, thinking, final, template, fmt)
    p, c, _ = encode(tokenizer, text, template)
    status, cut = "ok", 0
    if len(p) + len(c) > max_len:
        keep = max_len - len(p)
        if overlong != "truncate" or keep < max(2, min_kept):
            return Rendered(None, "dropped_overlong", text.kind)
        c, cut = c[:keep], len(c) - keep
        status = "truncated"
    return Rendered(Example(p + c, [IGNORE] * len(p) + c), status, text.kind, cut)


def parts_from_response(response: str | None, markup: str | None = None) -> tuple[str, str]:
    """(thinking, final) split from a raw response: for curated data written before the `thinking` and `final`
    columns (the record assembly's split; `markup` is the record's, when it has one)."""
    from raypipe.core.schema import harmony_reasoning, split_reasoning

    split = split_reasoning(response or "", markup)
    thinking = harmony_reasoning(split.thinking) if split.markup == "harmony" else split.thinking
    return thinking, split.final
