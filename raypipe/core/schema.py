"""The trajectory record: one Arrow schema for every input format (raypipe.core.formats), and its building blocks.

Reasoning markup: R1 `<think>`, Sky-T1/QwQ `<|begin_of_thought|>`, gpt-oss harmony channels, or reasoning given
apart (`reasoning_content`). Every record carries the canonical `thinking` and `final` parts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa

from raypipe.core.errors import RowError

SCHEMA_VERSION = "1"

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("problem_id", pa.string()),
        ("problem", pa.string()),
        ("reference_answer", pa.string()),
        ("response", pa.string()),
        ("thinking", pa.string()),  # in memory only; outputs keep the offsets below
        ("final", pa.string()),
        ("thinking_start", pa.int64()),
        ("thinking_end", pa.int64()),
        ("final_start", pa.int64()),
        ("final_end", pa.int64()),
        ("thought_complete", pa.bool_()),
        ("markup", pa.string()),
        ("meta", pa.string()),  # every input field the adapter did not consume, as JSON, unchanged
        ("shard", pa.string()),
        ("row", pa.int64()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [("shard", pa.string()), ("row", pa.int64()), ("raw", pa.string()), ("reason", pa.string()),
     ("id", pa.string()), ("source", pa.string())]
)

PROBLEM_KEYS = ("problem", "question")
ANSWER_KEYS = ("reference_answer", "answer", "ground_truth", "gt_answer")
RESPONSE_KEYS = ("response", "output", "completion")
def stable_hash(*parts: str, n: int = 16) -> str:
    h = hashlib.blake2b(digest_size=n)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def hash64(*parts: str) -> int:
    """A stable 63-bit hash of the parts (fits a signed int64 and JSON): rank tie-breaks and seeded picks."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big") >> 1


def normalize_problem(text: str) -> str:
    return " ".join(text.split()).lower()


def problem_id(problem: str) -> str:
    return stable_hash(normalize_problem(problem), n=8)


# --- reasoning markup -------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Offsets of the reasoning and the final part inside the response."""

    response: str
    thinking_start: int
    thinking_end: int
    final_start: int
    final_end: int
    complete: bool
    markup: str

    @property
    def thinking(self) -> str:
        return self.response[self.thinking_start:self.thinking_end]

    @property
    def final(self) -> str:
        return self.response[self.final_start:self.final_end]


_MARKERS = {
    "analysis": "<|channel|>analysis<|message|>",
    "final": "<|channel|>final<|message|>",
    "harmony_ends": ("<|end|>", "<|return|>", "<|start|>", "<|call|>"),
    "bot": "<|begin_of_thought|>",
    "eot": "<|end_of_thought|>",
    "bos": "<|begin_of_solution|>",
    "eos": ("<|end_of_solution|>",),
    "think": "<think>",
    "unthink": "</think>",
}
_MARKERS_BYTES = {k: tuple(x.encode() for x in v) if isinstance(v, tuple) else v.encode() for k, v in _MARKERS.items()}


def markup_bounds(buf, lo: int, hi: int, expected_markup: str | None = None) -> tuple[int, int, int, int, bool, str]:
    """(thinking start, thinking end, final start, final end, complete, markup) of the response buf[lo:hi].

    Works on a str or on a bytes buffer holding many responses (offsets are then byte offsets into it).
    `expected_markup` is the markup the response's source uses: a response with no markup at all from such a
    source started inside its reasoning (the opening tag was in the prompt) and never closed it.
    """
    m = _MARKERS_BYTES if isinstance(buf, (bytes, bytearray)) else _MARKERS

    def find(x, start=lo):
        return buf.find(x, start, hi)

    def end(start, ends):
        found = [i for i in (find(e, start) for e in ends) if i != -1]
        return min(found) if found else hi

    a, f = find(m["analysis"]), buf.rfind(m["final"], lo, hi)
    if a != -1 or f != -1:
        ts = a + len(m["analysis"]) if a != -1 else lo
        te = end(ts, m["harmony_ends"]) if a != -1 else lo
        if f == -1:
            return ts, hi if a != -1 else lo, hi, hi, False, "harmony"
        fs = f + len(m["final"])
        return ts, min(te, f), fs, end(fs, m["harmony_ends"]), True, "harmony"
    b, e = find(m["bot"]), find(m["eot"])
    if b != -1 or e != -1:
        ts = b + len(m["bot"]) if b != -1 else lo
        e = find(m["eot"], ts)
        if e == -1:
            return ts, hi, hi, hi, False, "sky"
        fs = e + len(m["eot"])
        s = find(m["bos"], fs)
        if s != -1:
            fs = s + len(m["bos"])
        return ts, e, fs, end(fs, m["eos"]), True, "sky"
    e, b = find(m["unthink"]), find(m["think"])
    if e != -1:
        ts = b + len(m["think"]) if -1 < b < e else lo
        return ts, e, e + len(m["unthink"]), hi, True, "think"
    if b != -1:
        return b + len(m["think"]), hi, hi, hi, False, "think"
    if expected_markup and expected_markup not in ("plain", "reasoning_content"):
        return lo, hi, hi, hi, False, expected_markup
    return lo, hi, lo, hi, True, "plain"


def split_reasoning(response: str, expected_markup: str | None = None) -> Split:
    """Separate the reasoning from the final part. An unfinished reasoning has an empty final part."""
    return Split(response, *markup_bounds(response, 0, len(response), expected_markup))


# --- record assembly ----------------------------------------------------------------------------

def first_of(row: dict, keys: Iterable[str]) -> tuple[str | None, Any]:
    """(key, value) of the first of `keys` present and not null in the row."""
    for k in keys:
        if k in row and row[k] is not None:
            return k, row[k]
    return None, None


def text_of(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"field '{field}' must be a string, got {type(value).__name__}")


def make_record(row: dict, problem: str, response: str, reasoning: str | None, consumed: set[str],
                default_source: str, shard: str, index: int, expected_markup: dict[str, str] | None = None) -> dict:
    """The normalised record of one row, once a format has found its problem, response and (optional) reasoning
    given apart from the response. `consumed` names the fields the format read; the rest go to `meta`.

    `expected_markup` maps a source to the reasoning markup its other responses use (see split_reasoning).
    """
    consumed = set(consumed)
    ak, answer = first_of(row, ANSWER_KEYS)
    reference = text_of(answer, ak) if ak is not None else ""
    if ak:
        consumed.add(ak)
    if reasoning:
        reasoning = text_of(reasoning, "reasoning_content")
        consumed.add("reasoning_content")
    sk, source = first_of(row, ("source", "model"))
    source = text_of(source, sk) if sk else default_source
    split = None if reasoning else split_reasoning(response, (expected_markup or {}).get(source))
    rid = row.get("id")
    rid = text_of(rid, "id") if rid is not None else stable_hash(source, problem, response)
    consumed |= {"id"} | ({"source"} if sk == "source" else set())
    meta = {k: v for k, v in row.items() if k not in consumed and v is not None}
    if split is None:  # reasoning given apart from the response (chat `reasoning_content`)
        thinking, final, offsets, complete, markup = reasoning, response, (0, 0, 0, len(response)), True, "reasoning_content"
    else:
        thinking, final, complete, markup = split.thinking, split.final, split.complete, split.markup
        offsets = (split.thinking_start, split.thinking_end, split.final_start, split.final_end)
    return {
        "id": rid,
        "source": source,
        "problem_id": problem_id(problem),
        "problem": problem,
        "reference_answer": reference,
        "response": response,
        "thinking": thinking,
        "final": final,
        "thinking_start": offsets[0],
        "thinking_end": offsets[1],
        "final_start": offsets[2],
        "final_end": offsets[3],
        "thought_complete": complete,
        "markup": markup,
        "meta": json.dumps(meta, ensure_ascii=False, default=str),
        "shard": shard,
        "row": index,
    }


def dominant_markup(sources: Iterable[str], markups: Iterable[str]) -> dict[str, str]:
    """Per source, the reasoning markup most of its responses use (sources whose responses have none are absent)."""
    from collections import Counter

    votes: dict[str, Counter] = {}
    for source, markup in zip(sources, markups):
        if markup not in ("plain", "reasoning_content"):
            votes.setdefault(source, Counter())[markup] += 1
    return {s: c.most_common(1)[0][0] for s, c in votes.items()}


def records_table(rows: list[dict]) -> pa.Table:
    """Column by column: several times faster than from_pylist on long strings."""
    return pa.Table.from_arrays([pa.array([r[f.name] for r in rows], type=f.type) for f in RECORD_SCHEMA],
                                schema=RECORD_SCHEMA)


def rejects_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": None, "source": None, **r} for r in rows], schema=REJECT_SCHEMA
    )
