"""NVIDIA's Nemotron math traces, both layouts in one format (tests/fixtures/formats/CARDS.md, sections 3a and 3b):

- Nemotron-Math-v2 (gpt-oss-120b): `problem`, `expected_answer`, `messages` whose assistant turns carry
  `reasoning_content` and OpenAI-style `tool_calls`, `tool` turns with the outputs, `metadata` (pass rates),
  `data_source`, and `uuid` (the PROBLEM's id, shared by its trajectories: the record id is the stable hash);
- Nemotron-Post-Training-Dataset (split math): `messages` (system, user, assistant with `<think>…</think>` when
  `reasoning` is on), `generator`, `uuid` (the row's id) and, in v1, `metadata`: a STRING holding expected_answer,
  read with json.loads, else ast.literal_eval (never eval); a row whose metadata cannot be read is one reject.
"""
from __future__ import annotations

import ast
import json
from typing import Any

from raypipe.core.errors import RowError
from raypipe.core.formats import FORMATS, InputFormat
from raypipe.core.formats.datasets import join_pieces, optional_text
from raypipe.core.schema import Parts, text_of, tool_call_text, tool_output_text

MATH_V2 = "nvidia/Nemotron-Math-v2"
POST_TRAINING = "nvidia/Nemotron-Post-Training-Dataset"


def parse_metadata(text: str) -> dict:
    """A metadata string as a dict: JSON, else a Python literal (`str(dict)`); RowError naming the field."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise RowError(f"field 'metadata' is neither JSON nor a Python literal ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise RowError(f"field 'metadata' holds a {type(value).__name__}, not an object")
    return value


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@FORMATS.register("nemotron")
class Nemotron(InputFormat):
    description = ("Nemotron-Math-v2: problem, expected_answer, messages [{role, content, reasoning_content, "
                   "tool_calls}] + tool turns, metadata, data_source; or Nemotron-Post-Training math: messages, "
                   "generator, uuid, metadata (a string holding expected_answer)")

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        if "messages" not in keys:
            return 0
        math_v2 = "expected_answer" in keys and keys & {"data_source", "changed_answer_to_majority",
                                                        "original_expected_answer", "used_in"}
        post_training = "generator" in keys and keys & {"metadata", "category", "reasoning", "version"}
        return 6 if math_v2 or post_training else 0

    def parts(self, row: dict) -> Parts:
        messages = row.get("messages")
        if not isinstance(messages, list):
            raise RowError("field 'messages' must be a list of turns")
        if any(not isinstance(t, dict) for t in messages):
            raise RowError("field 'messages' holds a turn that is not an object")
        math_v2 = "expected_answer" in row  # else the post-training layout
        consumed, meta = {"messages"}, {}
        metadata = row.get("metadata")
        parsed = parse_metadata(metadata) if isinstance(metadata, str) else None
        if math_v2:
            reference = optional_text(row["expected_answer"], "expected_answer")
            consumed.add("expected_answer")
        else:
            found = (parsed or {}).get("expected_answer")
            reference = optional_text(found, "metadata.expected_answer")
        if parsed is not None:  # a string: read, the rest of it kept as an object
            consumed.add("metadata")
            rest = {k: v for k, v in parsed.items() if math_v2 or k != "expected_answer"}
            if rest:
                meta["metadata"] = rest
        roles = [str(t.get("role", "")).lower() for t in messages]
        if "assistant" not in roles:
            raise RowError("field 'messages' has no assistant turn")
        if row.get("problem") is not None:
            problem = text_of(row["problem"], "problem")
            consumed.add("problem")
        elif "user" in roles:
            problem = text_of(messages[roles.index("user")].get("content") or "", "messages.content")
        else:
            raise RowError("field 'messages' has no user turn")
        system = [t.get("content") for t, r in zip(messages, roles) if r == "system" and t.get("content")]
        if system:
            meta["system_turn"] = text_of("\n\n".join(system), "messages.content")
        if math_v2:
            source, rid = MATH_V2, None  # uuid identifies the problem: it stays in meta
        else:
            source = optional_text(row.get("generator"), "generator") or (
                f"{POST_TRAINING}-v1" if "metadata" in row else f"{POST_TRAINING}-v2")
            rid = optional_text(row.get("uuid"), "uuid")
            consumed |= {"generator", "uuid"}
        common = dict(reference=reference, source=source, id=rid, consumed=consumed, meta=meta)

        last = len(roles) - 1 - roles[::-1].index("assistant")
        final = text_of(messages[last].get("content") or "", "messages.content")
        pieces, apart = self._reasoning(messages, roles, last)
        if apart:  # reasoning_content, tool calls, tool outputs: the thinking in order, the final part apart
            return Parts(problem, final, reasoning=join_pieces(pieces), final=final, **common)
        if str(row.get("reasoning", "")).lower() == "off" and "</think>" not in final:
            return Parts(problem, final, reasoning="", final=final, **common)  # no reasoning, by the row's word
        return Parts(problem, final, **common)  # `<think>…</think>` in the content: the markup split

    @staticmethod
    def _reasoning(messages: list[dict], roles: list[str], last: int) -> tuple[list[str], bool]:
        """(the reasoning's pieces in order, whether the trajectory gives its reasoning apart from the content)."""
        pieces, apart = [], False
        for i, (t, role) in enumerate(zip(messages, roles)):
            if role == "assistant":
                if t.get("reasoning_content"):
                    pieces.append(text_of(t["reasoning_content"], "messages.reasoning_content"))
                    apart = True
                if i != last and t.get("content"):  # a preamble before a tool call
                    pieces.append(text_of(t["content"], "messages.content"))
                for call in t.get("tool_calls") or []:
                    fn = (call or {}).get("function") or {}
                    pieces.append(tool_call_text(str(fn.get("name") or "python"), _arguments(fn.get("arguments", ""))))
                    apart = True
            elif role == "tool":
                pieces.append(tool_output_text(text_of(t.get("content") or "", "messages.content")))
                apart = True
        return pieces, apart
