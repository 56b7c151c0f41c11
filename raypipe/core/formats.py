"""Input formats: how a row of a dataset becomes a normalised record (raypipe.core.schema).

A format says whether a file's fields look like its own (`detect`) and finds a row's problem, response and
reasoning (`parts`); the record assembly (reference, source, id, markup split, meta) is shared. A format may also
offer a columnar fast path for whole tables (`normalize_table`; None hands the table to the row path). Register a
new one with `@FORMATS.register("name")`; auto-detection tries the formats in registration order.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable

import pyarrow as pa

from raypipe.core.errors import LayoutError, RowError
from raypipe.core.registry import Registry
from raypipe.core.schema import ANSWER_KEYS, PROBLEM_KEYS, RESPONSE_KEYS, first_of, make_record, text_of


class InputFormat:
    name: ClassVar[str]
    description: ClassVar[str]  # the fields a row of this format has (for errors about unknown layouts)

    def detect(self, keys: set[str]) -> bool:
        raise NotImplementedError

    def parts(self, row: dict) -> tuple[str, str, str | None, set[str]]:
        """(problem, response, reasoning given apart or None, the fields read)."""
        raise NotImplementedError

    def normalize(self, row: Any, default_source: str, shard: str, index: int,
                  expected_markup: dict[str, str] | None = None) -> dict:
        """One row to its record; RowError for a row that cannot be used."""
        if not isinstance(row, dict):
            raise RowError(f"record is a {type(row).__name__}, not an object")
        problem, response, reasoning, consumed = self.parts(row)
        return make_record(row, problem, response, reasoning, consumed, default_source, shard, index, expected_markup)

    def normalize_table(self, table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
        """(records, rejects) for a whole table without a Python dict per row, or None: use the row path."""
        return None


FORMATS: Registry[InputFormat] = Registry("input format")


def detect_format(keys: Iterable[str]) -> str:
    keys = set(keys)
    for name, fmt in FORMATS.items():
        if fmt().detect(keys):
            return name
    accepted = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items())
    raise LayoutError(f"unknown record layout: found fields {sorted(keys)}; accepted layouts are {accepted}")


def normalize_row(row: Any, layout: str, default_source: str, shard: str, index: int,
                  expected_markup: dict[str, str] | None = None) -> dict:
    return FORMATS.create(layout).normalize(row, default_source, shard, index, expected_markup)


def _turns(row: dict, key: str, role_key: str, text_key: str) -> tuple[str, str, str | None]:
    turns = row[key]
    if not isinstance(turns, list):
        raise RowError(f"field '{key}' must be a list of turns")
    users, assistants, reasoning = [], [], None
    for t in turns:
        if not isinstance(t, dict):
            raise RowError(f"field '{key}' holds a turn that is not an object")
        role = str(t.get(role_key, "")).lower()
        if role in ("user", "human"):
            users.append(text_of(t.get(text_key, ""), f"{key}.{text_key}"))
        elif role in ("assistant", "gpt", "model"):
            assistants.append(text_of(t.get(text_key, ""), f"{key}.{text_key}"))
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

    def detect(self, keys: set[str]) -> bool:
        return self.key in keys

    def parts(self, row: dict) -> tuple[str, str, str | None, set[str]]:
        if self.key not in row:
            raise RowError(f"missing field '{self.key}'")
        problem, response, reasoning = _turns(row, self.key, self.role_key, self.text_key)
        return problem, response, row.get("reasoning_content") or reasoning, {self.key}


@FORMATS.register("sharegpt")
class ShareGPT(Chat):
    description = "conversations: [{from, value}] (+ reference_answer|answer)"
    key, role_key, text_key = "conversations", "from", "value"


@FORMATS.register("flat")
class Flat(InputFormat):
    description = f"problem|question + response|output|completion (+ {'|'.join(ANSWER_KEYS)})"

    def detect(self, keys: set[str]) -> bool:
        return bool(keys & set(PROBLEM_KEYS) and keys & set(RESPONSE_KEYS))

    def parts(self, row: dict) -> tuple[str, str, str | None, set[str]]:
        pk, problem = first_of(row, PROBLEM_KEYS)
        rk, response = first_of(row, RESPONSE_KEYS)
        if pk is None:
            raise RowError(f"missing field: one of {PROBLEM_KEYS}")
        if rk is None:
            raise RowError(f"missing field: one of {RESPONSE_KEYS}")
        return text_of(problem, pk), text_of(response, rk), row.get("reasoning_content"), {pk, rk}

    def normalize_table(self, table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
        from raypipe.core.columnar import normalize_flat_table

        return normalize_flat_table(table, default_source, shard)
