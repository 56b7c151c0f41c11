"""The trajectory record: one Arrow schema for every input format (raypipe.core.formats), and its building blocks.

Reasoning markup: R1 `<think>`, Sky-T1/QwQ `<|begin_of_thought|>`, gpt-oss harmony channels, or reasoning given
apart (`reasoning_content`). Every record carries the canonical `thinking` and `final` parts.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

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
        ("thinking", pa.string()),  # the canonical reasoning, whatever markup or field it came from
        ("final", pa.string()),  # the canonical final part
        ("thinking_start", pa.int64()),
        ("thinking_end", pa.int64()),
        ("final_start", pa.int64()),
        ("final_end", pa.int64()),
        ("thought_complete", pa.bool_()),
        ("markup", pa.string()),
        ("meta", pa.string()),  # every input field the format did not consume, as JSON, unchanged
        ("format", pa.string()),  # the input format that read the row
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("record", pa.int64()),  # which record of its row (a row may hold several trajectories)
    ]
)

REJECT_SCHEMA = pa.schema(
    [("shard", pa.string()), ("row", pa.int64()), ("record", pa.int64()), ("raw", pa.string()),
     ("reason", pa.string()), ("id", pa.string()), ("source", pa.string())]
)

PROBLEM_KEYS = ("problem", "question")
ANSWER_KEYS = ("reference_answer", "answer", "ground_truth", "gt_answer")
RESPONSE_KEYS = ("response", "output", "completion")
def stable_hash(*parts: str, n: int = 16) -> str:
    """blake2b of the parts, each followed by 0x1f."""
    return hashlib.blake2b("".join(p + "\x1f" for p in parts).encode("utf-8", "surrogatepass"), digest_size=n).hexdigest()


def hash64(*parts: str) -> int:
    """A stable 63-bit hash of the parts (fits a signed int64 and JSON): rank tie-breaks and seeded picks."""
    digest = hashlib.blake2b("".join(p + "\x1f" for p in parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


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
    "answer": "<answer>",
    "unanswer": "</answer>",
}
MARKUPS = ("harmony", "sky", "think")
_TAG_CORES = {"harmony": "<|channel|>", "sky": "_of_thought|>", "think": "think>"}  # in each tag markup_bounds finds
_MARKERS_BYTES = {k: tuple(x.encode() for x in v) if isinstance(v, tuple) else v.encode() for k, v in _MARKERS.items()}


def markup_bounds(buf, lo: int, hi: int, expected_markup: str | None = None,
                  kinds: tuple[str, ...] = MARKUPS) -> tuple[int, int, int, int, bool, str]:
    """(thinking start, thinking end, final start, final end, complete, markup) of the response buf[lo:hi].

    Works on a str or on a bytes buffer holding many responses (offsets are then byte offsets into it).
    `expected_markup` is the markup the response's source uses: a response with no markup at all from such a
    source started inside its reasoning (the opening tag was in the prompt) and never closed it. `kinds` may leave
    out a markup none of whose tags occur in buf[lo:hi] (see markups_in), which saves searching for them.
    """
    m = _MARKERS_BYTES if isinstance(buf, (bytes, bytearray)) else _MARKERS

    def find(x, start=lo):
        return buf.find(x, start, hi)

    def end(start, ends):
        found = [i for i in (find(e, start) for e in ends) if i != -1]
        return min(found) if found else hi

    a, f = (find(m["analysis"]), buf.rfind(m["final"], lo, hi)) if "harmony" in kinds else (-1, -1)
    if a != -1 or f != -1:
        # The reasoning runs from the first analysis message to the final channel: every analysis message and
        # tool call between them (harmony_reasoning turns the span into plain text).
        ts = a + len(m["analysis"]) if a != -1 else lo
        if f == -1:
            return ts, hi if a != -1 else lo, hi, hi, False, "harmony"
        fs = f + len(m["final"])
        return ts, max(ts, f) if a != -1 else lo, fs, end(fs, m["harmony_ends"]), True, "harmony"
    b, e = (find(m["bot"]), find(m["eot"])) if "sky" in kinds else (-1, -1)
    if b != -1 or e != -1:
        ts = b + len(m["bot"]) if b != -1 else lo
        if e != -1 and e < ts:
            e = find(m["eot"], ts)
        if e == -1:
            return ts, hi, hi, hi, False, "sky"
        fs = e + len(m["eot"])
        s = find(m["bos"], fs)
        if s != -1:
            fs = s + len(m["bos"])
        return ts, e, fs, end(fs, m["eos"]), True, "sky"
    e, b = (find(m["unthink"]), find(m["think"])) if "think" in kinds else (-1, -1)
    if e != -1:
        ts = b + len(m["think"]) if -1 < b < e else lo
        fs, fe = e + len(m["unthink"]), hi
        o = find(m["answer"], fs)  # `<think>…</think><answer>…</answer>` (a-m-team): the final part is the answer
        if o != -1 and not buf[fs:o].strip():
            c = buf.rfind(m["unanswer"], o, hi)
            fs, fe = o + len(m["answer"]), (c if c != -1 else hi)
        return ts, e, fs, fe, True, "think"
    if b != -1:
        return b + len(m["think"]), hi, hi, hi, False, "think"
    if expected_markup and expected_markup not in ("plain", "reasoning_content"):
        return lo, hi, hi, hi, False, expected_markup
    return lo, hi, lo, hi, True, "plain"


def markups_in(buf) -> tuple[str, ...]:
    """The markups some of whose tags occur in buf (markup_bounds' `kinds`)."""
    as_bytes = isinstance(buf, (bytes, bytearray))
    return tuple(k for k, core in _TAG_CORES.items() if buf.find(core.encode() if as_bytes else core) != -1)


_HARMONY_END = re.compile(r"<\|end\|>|<\|call\|>|<\|return\|>")


def tool_call_text(name: str, arguments: str) -> str:
    """A tool call inside the canonical reasoning (the same for harmony and OpenAI-style tool_calls)."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n</tool_call>"


def tool_output_text(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def harmony_reasoning(span: str) -> str:
    """The reasoning of a harmony span (analysis messages, tool calls and their outputs, in order) as plain text.

    The span starts inside the first analysis message and ends where the final channel begins; a span holding one
    analysis message is its text unchanged.
    """
    if "<|" not in span:
        return span
    messages = span.split("<|start|>")
    parts = [_HARMONY_END.split(messages[0], 1)[0]]
    for message in messages[1:]:
        header, sep, body = message.partition("<|message|>")
        if not sep:
            continue  # the header of the final channel's message, cut by the span
        body = _HARMONY_END.split(body, 1)[0]
        role = header.split("<|channel|>")[0].split(" to=")[0].strip()
        # The recipient may sit in the role part (`assistant to=python<|channel|>analysis`) or the channel part
        # (`<|channel|>analysis to=python code`, `<|channel|>commentary to=functions.NAME <|constrain|>json`).
        recipient = re.search(r"\bto=(?:functions\.)?([\w.\-]*)", header)
        if role != "assistant":  # a tool's answer: `functions.NAME to=assistant<|channel|>commentary`
            parts.append(tool_output_text(body.strip("\n")))
        elif recipient:  # a call, on the commentary channel (functions) or the analysis channel (python, browser)
            parts.append(tool_call_text(recipient.group(1) or "python", body.strip("\n")))
        else:
            parts.append(body)
    return "\n\n".join(p.strip("\n") for p in parts if p.strip())


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


ANY_SOURCE = "*"  # an expected_markup key: the markup of every source


@dataclass
class Parts:
    """What an input format found in a row for one trajectory; make_record does the rest."""

    problem: str
    response: str
    reasoning: str | None = None  # given apart from the response (e.g. `reasoning_content`)
    reference: str | None = None  # found by the format; None: the row's reference_answer / answer / … field
    source: str | None = None  # None: the row's source / model field, else the file's name
    id: str | None = None  # None: the row's id field, else a stable hash of source, problem and response
    consumed: set[str] = field(default_factory=set)  # the row's fields the format read (the rest go to meta)
    meta: dict = field(default_factory=dict)  # this record's own extra fields (e.g. one generation's grades)
    # The final part, where the format separated it itself (then `reasoning` is the whole reasoning, "" for none;
    # the offsets point at the parts where the response holds them verbatim). None: `response` or its markup split.
    final: str | None = None
    # Turns the reasoning into its canonical text (e.g. the tool calls of a tool-integrated trace); None: as found.
    canonical: Callable[[str], str] | None = None


def _locate(response: str, thinking: str, final: str) -> tuple[int, int, int, int]:
    """Offsets of parts found apart, where the response holds them verbatim (else an empty reasoning span and the
    whole response as the final part, as for `reasoning_content`)."""
    ts = response.find(thinking) if thinking else -1
    ts, te = (ts, ts + len(thinking)) if ts != -1 else (0, 0)
    fs = response.find(final, te) if final else -1
    return (ts, te, fs, fs + len(final)) if fs != -1 else (ts, te, 0, len(response))


def make_record(row: dict, parts: Parts, fmt: str, default_source: str, shard: str, index: int, record: int = 0,
                expected_markup: dict[str, str] | None = None) -> dict:
    """The normalised record of one trajectory of a row. `expected_markup` maps a source to the reasoning markup
    its other responses use (see split_reasoning)."""
    consumed = set(parts.consumed)
    reference = parts.reference
    if reference is None:
        ak, answer = first_of(row, ANSWER_KEYS)
        reference = text_of(answer, ak) if ak is not None else ""
        consumed |= {ak} if ak else set()
    reasoning = text_of(parts.reasoning, "reasoning_content") if parts.reasoning else None
    sk, source = first_of(row, ("source", "model"))
    source = parts.source or (text_of(source, sk) if sk else default_source)
    rid = parts.id if parts.id is not None else row.get("id")
    rid = text_of(rid, "id") if rid is not None else stable_hash(source, parts.problem, parts.response)
    consumed |= {"id"} | ({sk} if sk and not parts.source else set())  # the field that named the source was read
    meta = {k: v for k, v in row.items() if k not in consumed and v is not None} | parts.meta
    response = parts.response
    if parts.final is not None:  # both parts found by the format
        thinking, final, complete, markup = reasoning or "", parts.final, True, "reasoning_content"
        offsets = _locate(response, thinking, final)
    elif reasoning is not None:  # reasoning given apart from the response
        thinking, final, offsets, complete, markup = reasoning, response, (0, 0, 0, len(response)), True, "reasoning_content"
    else:
        expected = expected_markup or {}
        split = split_reasoning(response, expected.get(source) or expected.get(ANY_SOURCE))
        thinking, final, complete, markup = split.thinking, split.final, split.complete, split.markup
        offsets = (split.thinking_start, split.thinking_end, split.final_start, split.final_end)
        if markup == "harmony":
            thinking = harmony_reasoning(thinking)
    if parts.canonical is not None:
        thinking = parts.canonical(thinking)
    return {
        "id": rid,
        "source": source,
        "problem_id": problem_id(parts.problem),
        "problem": parts.problem,
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
        "format": fmt,
        "shard": shard,
        "row": index,
        "record": record,
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
    """Rows or records that could not be used; `record` is null where the row failed as a whole."""
    return pa.Table.from_pylist([{"id": None, "source": None, "record": None, **r} for r in rows],
                                schema=REJECT_SCHEMA)
