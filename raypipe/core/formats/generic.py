"""The generic layouts: flat rows, chat `messages`, ShareGPT `conversations`, a field mapping, and the fixed
markups of Sky-T1 and raw gpt-oss (harmony) output in flat rows."""
from __future__ import annotations

import re
import pyarrow as pa

from raypipe.core.errors import RowError
from raypipe.core.formats import FORMATS, InputFormat, _check_mapping
from raypipe.core.schema import ANSWER_KEYS, PROBLEM_KEYS, RESPONSE_KEYS, Parts, first_of, text_of


def turns(row: dict, key: str, role_key: str, text_key: str) -> tuple[str, str, str | None]:
    """(first user text, last assistant text, the assistant's reasoning_content) of a conversation."""
    conversation = row[key]
    if not isinstance(conversation, list):
        raise RowError(f"field '{key}' must be a list of turns")
    users, assistants, reasoning = [], [], None
    for t in conversation:
        if not isinstance(t, dict):
            raise RowError(f"field '{key}' holds a turn that is not an object")
        role = str(t.get(role_key, "")).lower()
        if role in ("user", "human"):
            users.append(text_of(t.get(text_key, ""), f"{key}.{text_key}"))
        elif role in ("assistant", "gpt", "model"):
            assistants.append(text_of(t.get(text_key, "") or "", f"{key}.{text_key}"))
            if t.get("reasoning_content"):
                reasoning = text_of(t["reasoning_content"], f"{key}.reasoning_content")
    if not users:
        raise RowError(f"field '{key}' has no user turn")
    if not assistants:
        raise RowError(f"field '{key}' has no assistant turn")
    return users[0], assistants[-1], reasoning


@FORMATS.register("chat")
class Chat(InputFormat):
    description = "messages: [{role, content}] (+ reference_answer|answer)"
    key, role_key, text_key = "messages", "role", "content"
    needs = (("messages",),)

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 2 if cls.key in keys else 0

    def parts(self, row: dict) -> Parts:
        if self.key not in row:
            raise RowError(f"missing field '{self.key}'")
        problem, response, reasoning = turns(row, self.key, self.role_key, self.text_key)
        consumed = {self.key} | ({"reasoning_content"} if row.get("reasoning_content") else set())
        return Parts(problem, response, row.get("reasoning_content") or reasoning, consumed=consumed)


@FORMATS.register("sharegpt")
class ShareGPT(Chat):
    description = "conversations: [{from, value}] (+ reference_answer|answer)"
    key, role_key, text_key = "conversations", "from", "value"
    needs = (("conversations",),)


@FORMATS.register("flat")
class Flat(InputFormat):
    description = f"problem|question + response|output|completion (+ {'|'.join(ANSWER_KEYS)})"
    needs = (PROBLEM_KEYS, RESPONSE_KEYS)

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 1 if keys & set(PROBLEM_KEYS) and keys & set(RESPONSE_KEYS) else 0

    def parts(self, row: dict) -> Parts:
        pk, problem = first_of(row, PROBLEM_KEYS)
        rk, response = first_of(row, RESPONSE_KEYS)
        if pk is None:
            raise RowError(f"missing field: one of {PROBLEM_KEYS}")
        if rk is None:
            raise RowError(f"missing field: one of {RESPONSE_KEYS}")
        reasoning = row.get("reasoning_content")
        return Parts(text_of(problem, pk), text_of(response, rk), reasoning,
                     consumed={pk, rk} | ({"reasoning_content"} if reasoning else set()))

    def normalize_table(self, table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
        from raypipe.core.columnar import normalize_flat_table

        return normalize_flat_table(table, default_source, shard)


class FixedMarkup(Flat):
    """Flat rows whose responses all use one reasoning markup: a response without it never closed its reasoning
    (the opening tag was in the prompt), and an empty reasoning is a defect."""

    requires_thinking = True
    needs = ()  # never detected: chosen with --format

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        return 0  # the same fields as flat: chosen with --format

    def normalize_table(self, table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
        return None


@FORMATS.register("sky-t1")
class SkyT1(FixedMarkup):
    description = ("flat rows whose responses use Sky-T1 / QwQ markup: <|begin_of_thought|> … <|end_of_thought|> "
                   "<|begin_of_solution|> … <|end_of_solution|>")
    fixed_markup = "sky"


@FORMATS.register("harmony")
class Harmony(FixedMarkup):
    description = ("flat rows whose responses are raw gpt-oss output in harmony channels (analysis, tool calls, "
                   "final)")
    fixed_markup = "harmony"


_STEP = re.compile(r"\.|\[(-?\d+)\]")


def lookup(row: Any, path: str) -> Any:
    """A value at a dotted path with list indices: `messages[-1].content`, `messages[0].info.reference_answer`.
    None where the path leads nowhere."""
    value = row
    for part in re.findall(r"[^.\[\]]+|\[-?\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(value, list) or not -len(value) <= index < len(value):
                return None
            value = value[index]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


@FORMATS.register("fields")
class FieldMap(InputFormat):
    """Any layout, read through `--fields problem=PATH,response=PATH,thinking=PATH,answer=PATH,id=PATH,
    source=PATH` (dotted paths with list indices)."""

    description = "any layout, with --fields problem=PATH,response=PATH[,thinking=,answer=,id=,source=]"

    def __init__(self, options: dict[str, str] | None = None):
        super().__init__(_check_mapping(options or {}))

    def parts(self, row: dict) -> Parts:
        got = {k: lookup(row, p) for k, p in self.options.items()}
        for k in ("problem", "response"):
            if got[k] is None:
                raise RowError(f"no value at {self.options[k]} ({k})")
        text = {k: (text_of(v, self.options[k]) if v is not None else None) for k, v in got.items()}
        roots = {re.split(r"[.\[]", p, maxsplit=1)[0] for p in self.options.values()}
        return Parts(text["problem"], text["response"], text.get("thinking"), text.get("answer"), text.get("source"),
                     text.get("id"), consumed=roots)
