"""The public trace datasets' own layouts: OpenR1-Math-220k, OpenMathReasoning, the a-m-team sets, OpenThoughts
(Nemotron is in raypipe.core.formats.nemotron). tests/fixtures/formats/CARDS.md gives each dataset's schema and the
sources it was taken from.

Conventions shared by them: a record's `source` is the generating model where the row names it, else the dataset's
id; a dataset's own problem-origin column (OpenR1's `source`, OpenMathReasoning's `problem_source`) stays in meta.
"""
from __future__ import annotations

import re
from typing import Any

from raypipe.core.errors import RowError
from raypipe.core.formats import FORMATS, InputFormat
from raypipe.core.formats.generic import turns
from raypipe.core.schema import Parts, split_reasoning, text_of, tool_call_text, tool_output_text


def optional_text(value: Any, field: str) -> str | None:
    return None if value is None else text_of(value, field)


def required_text(row: dict, key: str) -> str:
    if row.get(key) is None:
        raise RowError(f"missing field '{key}'")
    return text_of(row[key], key)


def join_pieces(pieces: list[str]) -> str:
    """Pieces of a reasoning (text, tool calls, tool outputs) as one text: a blank line between them."""
    return "\n\n".join(p.strip("\n") for p in pieces if p.strip())


# --- open-r1/OpenR1-Math-220k ---------------------------------------------------------------------------------

@FORMATS.register("openr1")
class OpenR1(InputFormat):
    """One row per problem with 2-4 DeepSeek-R1 generations: one record per generation, id `<uuid>#<k>`."""

    description = ("OpenR1-Math-220k: problem, answer, uuid, generations[] (+ correctness_math_verify[], "
                   "correctness_llama[], is_reasoning_complete[], finish_reasons[]; source = the problem's origin)")
    requires_thinking = True
    dataset = "open-r1/OpenR1-Math-220k"
    per_generation = ("correctness_math_verify", "correctness_llama", "is_reasoning_complete", "finish_reasons")
    needs = (("generations",), ("uuid", "correctness_math_verify"))

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 6 if "generations" in keys and keys & {"uuid", "correctness_math_verify"} else 0

    def parts(self, row: dict) -> list[Parts]:
        generations = row.get("generations")
        if not isinstance(generations, list):
            raise RowError("field 'generations' must be a list of strings")
        problem = required_text(row, "problem")
        reference = optional_text(row.get("answer"), "answer")
        uuid = optional_text(row.get("uuid"), "uuid")
        # The per-generation lists may be shorter than `generations` (or null): each is indexed defensively.
        lists = [f for f in self.per_generation if isinstance(row.get(f), list)]
        # `messages` repeats one generation as a chat: read here through `generations`, not kept once per record
        consumed = {"problem", "generations", "answer", "uuid", "messages", *lists}
        return [Parts(problem, text_of(g, f"generations[{k}]"), reference=reference, source=self.dataset,
                      id=f"{uuid}#{k}" if uuid is not None else None, consumed=consumed,
                      meta={f: row[f][k] for f in lists if k < len(row[f])})
                for k, g in enumerate(generations)]


# --- nvidia/OpenMathReasoning ------------------------------------------------------------------------------------

# A tool-integrated (tir) step inside <think>: the code, its output, and the harness's budget notice (dropped).
_TIR_STEP = re.compile(r"<tool_call>\n?(.*?)\n?</tool_call>(?:\s*```output\n?(.*?)\n?```)?(?:\s*```system\n.*?```)?",
                       re.S)


def tir_reasoning(thinking: str) -> str:
    """OpenMathReasoning's tir reasoning with its code blocks as canonical tool calls and tool outputs."""
    if "<tool_call>" not in thinking:
        return thinking
    pieces, pos = [], 0
    for m in _TIR_STEP.finditer(thinking):
        pieces += [thinking[pos:m.start()], tool_call_text("python", m.group(1))]
        if m.group(2) is not None:
            pieces.append(tool_output_text(m.group(2)))
        pos = m.end()
    return join_pieces(pieces + [thinking[pos:]])


@FORMATS.register("openmathreasoning")
class OpenMathReasoning(InputFormat):
    """One solution per row, `<think>…</think>` then the summary; tir solutions hold their code and its output
    inside the reasoning. genselect rows (selection prompts with a judgment) are not solutions: rejected."""

    description = ("OpenMathReasoning: problem, generated_solution, expected_answer, generation_model "
                   "(+ inference_mode cot|tir, problem_source, problem_type, pass_rate_72b_tir)")
    requires_thinking = True
    dataset = "nvidia/OpenMathReasoning"
    needs = (("generated_solution",), ("expected_answer", "generation_model"))

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 6 if "generated_solution" in keys and keys & {"expected_answer", "generation_model"} else 0

    def parts(self, row: dict) -> Parts:
        if row.get("inference_mode") == "genselect":
            raise RowError("inference_mode 'genselect': a selection prompt and its judgment, not a solution")
        return Parts(required_text(row, "problem"), required_text(row, "generated_solution"),
                     reference=optional_text(row.get("expected_answer"), "expected_answer"),
                     source=optional_text(row.get("generation_model"), "generation_model") or self.dataset,
                     consumed={"problem", "generated_solution", "expected_answer", "generation_model"},
                     canonical=tir_reasoning)


# --- a-m-team/AM-DeepSeek-R1-Distilled-1.4M and AM-DeepSeek-R1-0528-Distilled ---------------------------------

def strip_answer_tags(text: str) -> str:
    """The text of an `<answer>…</answer>` block (the tags, and anything around the block, never reach `final`)."""
    at = text.find("<answer>")
    if at == -1:
        return text
    body = text[at + len("<answer>"):]
    end = body.rfind("</answer>")
    return body[:end] if end != -1 else body


@FORMATS.register("am")
class AM(InputFormat):
    """`messages` [{role, content, info}] (1.4M) or `conversations` [{from, value, info}] (0528, with `system`).

    The assistant's `info.think_content` / `info.answer_content` are authoritative where present (both cards
    define them; the 0528 card does not confirm the tag layout of `value`); else the `<think>…</think>
    <answer>…</answer>` markup of the text. The reference is the user turn's `info.reference_answer` (1.4M) or
    `info.ground_truth` (0528). The source is the assistant's `info.model_name` (0528), else its `info.source`
    (1.4M: the response's source, e.g. am-0309), else the dataset. Everything else of `info` goes to meta
    (`user_info`, `assistant_info`), nulls left out."""

    description = ("a-m-team AM-DeepSeek-R1-Distilled-1.4M: messages [{role, content, info}] with "
                   "info.reference_answer; AM-DeepSeek-R1-0528-Distilled: system + conversations [{from, value, info}] "
                   "with info.ground_truth, think_content, answer_content, verify_score, model_name")
    requires_thinking = True
    layouts = {"messages": ("role", "content", "a-m-team/AM-DeepSeek-R1-Distilled-1.4M"),
               "conversations": ("from", "value", "a-m-team/AM-DeepSeek-R1-0528-Distilled")}
    info_keys = ("think_content", "answer_content", "reference_answer", "ground_truth")
    text_keys = ("think_content", "answer_content")
    reference_keys = ("reference_answer", "ground_truth")

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 6 if any(f"{c}[].info.{k}" in keys for c in cls.layouts for k in cls.info_keys) else 0

    def parts(self, row: dict) -> Parts:
        key = next((k for k in self.layouts if isinstance(row.get(k), list)), None)
        if key is None:
            raise RowError(f"missing field: one of {list(self.layouts)} (a list of turns)")
        role_key, text_key, dataset = self.layouts[key]
        user, assistant, system = None, None, []
        for t in row[key]:
            if not isinstance(t, dict):
                raise RowError(f"field '{key}' holds a turn that is not an object")
            role = str(t.get(role_key, "")).lower()
            if role in ("user", "human") and user is None:
                user = t
            elif role in ("assistant", "gpt"):
                assistant = t
            elif role == "system" and t.get(text_key):
                system.append(text_of(t[text_key], f"{key}.{text_key}"))
        if user is None or assistant is None:
            raise RowError(f"field '{key}' has no {'user' if user is None else 'assistant'} turn")
        u_info, a_info = self._info(user, key), self._info(assistant, key)
        problem = text_of(user.get(text_key) or "", f"{key}.{text_key}")
        content = text_of(assistant.get(text_key) or "", f"{key}.{text_key}")
        reference = next((text_of(i[k], f"{key}.info.{k}") for i in (u_info, a_info) for k in self.reference_keys
                          if i.get(k) not in (None, "")), "")
        source = a_info.get("model_name") or (a_info.get("source") if key == "messages" else None) or dataset
        meta = {name: rest for name, info in (("user_info", u_info), ("assistant_info", a_info))
                if (rest := {k: v for k, v in info.items() if v is not None and k not in self.text_keys
                             and k not in self.reference_keys})}
        if system:
            meta["system_turn"] = "\n\n".join(system)
        common = dict(reference=reference, source=text_of(source, f"{key}.info.model_name"), consumed={key},
                      meta=meta)
        think, answer = a_info.get("think_content"), a_info.get("answer_content")
        split = split_reasoning(content)
        if not think and answer is None and "<answer>" not in split.final:
            return Parts(problem, content, **common)  # the markup split (unfinished reasoning included)
        thinking = text_of(think, f"{key}.info.think_content") if think else split.thinking
        final = text_of(answer, f"{key}.info.answer_content") if answer is not None else split.final
        return Parts(problem, content, reasoning=thinking, final=strip_answer_tags(final), **common)

    @staticmethod
    def _info(turn: dict, key: str) -> dict:
        info = turn.get("info")
        if info is not None and not isinstance(info, dict):
            raise RowError(f"field '{key}.info' must be an object")
        return info or {}


# --- open-thoughts/OpenThoughts-114k -----------------------------------------------------------------------------

@FORMATS.register("openthoughts")
class OpenThoughts(InputFormat):
    """ShareGPT rows with the Sky-T1 system prompt; the assistant turn in Sky-T1 markup; no reference answer (every
    record is unverified) and no id. `system` stays in meta."""

    description = ("OpenThoughts-114k: system + conversations [{from: user|assistant, value}] in Sky-T1 markup "
                   "(<|begin_of_thought|> … <|begin_of_solution|> …), no reference answer")
    requires_thinking = True
    fixed_markup = "sky"
    dataset = "open-thoughts/OpenThoughts-114k"
    needs = (("system",), ("conversations",))

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 5 if {"system", "conversations"} <= keys else 0  # the a-m-team 0528 layout adds `info` (score 6)

    def parts(self, row: dict) -> Parts:
        if "conversations" not in row:
            raise RowError("missing field 'conversations'")
        problem, response, reasoning = turns(row, "conversations", "from", "value")
        return Parts(problem, response, reasoning, source=self.dataset, consumed={"conversations"})
