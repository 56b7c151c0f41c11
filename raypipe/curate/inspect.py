"""`raypipe inspect`: records of a curation output read back from its curated/ and dropped/ Parquet (local or s3://)
and printed as the report shows them (raypipe.core.trace_view): steps, markers, verdict, decision and reason.

It reads one row group at a time and only the columns it ranks or matches on, so a large output costs a scan of a
column or two, not of the texts.
"""
from __future__ import annotations

import heapq
import json
import textwrap

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.core.lexicon import Lexicon, get_lexicon
from raypipe.core.trace_view import RecordView, Step, branching, fold_point, split_at, view

PARTS = ("curated", "dropped")
WIDTH = 100


def run_settings(folder: str, storage: io.Storage) -> tuple[Lexicon, str]:
    """The lexicon and segmenter the run scored with (from its manifest.json)."""
    text = io.read_text(io.join(folder, "manifest.json"), storage)
    if text is None:
        raise FileNotFoundError(f"{folder} holds no manifest.json: not the output folder of a curation run")
    config = json.loads(text)["config"]
    try:
        return get_lexicon(config["lexicon"]), config["segmenter"]
    except (OSError, ValueError) as e:
        raise ValueError(f"the run's lexicon {config['lexicon']!r} cannot be loaded here: {e}") from None


def _files(folder: str, parts: tuple[str, ...], storage: io.Storage) -> list[str]:
    out = []
    for part in parts:
        uri = io.join(folder, part)
        if io.exists(uri, storage):
            out += [u for u in io.list_inputs(uri, storage) if u.endswith(".parquet")]
    return out


def _row_groups(uri: str, storage: io.Storage):
    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):
            yield pf, g


def _match(table: pa.Table, source: str | None) -> pa.Array | None:
    return None if source is None else pc.equal(table.column("source"), source)


def find(folder: str, rid: str, storage: io.Storage, source: str | None = None) -> list[dict]:
    """The rows of curated/ and dropped/ with this id (of this source, if given)."""
    found = []
    for uri in _files(folder, PARTS, storage):
        for pf, g in _row_groups(uri, storage):
            keys = pf.read_row_group(g, columns=["id", "source"])
            mask = pc.equal(keys.column("id"), rid)
            if source is not None:
                mask = pc.and_(mask, _match(keys, source))
            if pc.any(mask).as_py():
                found += pf.read_row_group(g).filter(mask).to_pylist()
    return found


def rejected(folder: str, rid: str, storage: io.Storage) -> list[dict]:
    """rejects/ rows with this id (a record that could not be read has no decision to show)."""
    out = []
    for uri in _files(folder, ("rejects",), storage):
        t = io.read_parquet(uri, storage, columns=["id", "source", "shard", "row", "reason"])
        out += t.filter(pc.fill_null(pc.equal(t.column("id"), rid), False)).to_pylist()
    return out


def worst(folder: str, n: int, storage: io.Storage, source: str | None = None) -> list[dict]:
    """The n dropped rows (of a source, if given) with the highest branch_score; ties by source, then id."""
    heap: list[tuple] = []  # the n best so far, smallest first: (score, -source, -id) stands in as a max-key
    where: dict[tuple, tuple] = {}
    for uri in _files(folder, ("dropped",), storage):
        for pf, g in _row_groups(uri, storage):
            t = pf.read_row_group(g, columns=["source", "id", "branch_score"])
            for i, (s, rid, score) in enumerate(zip(*(t.column(c).to_pylist() for c in t.column_names))):
                if score is None or score != score or (source is not None and s != source):
                    continue
                item = (score, _desc(s), _desc(rid))
                if len(heap) < n:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    where.pop(heapq.heapreplace(heap, item), None)
                else:
                    continue
                where[item] = (uri, g, i)
    rows = []
    for item in sorted(heap, reverse=True):
        uri, g, i = where[item]
        fs, path = storage.filesystem(uri)
        with fs.open_input_file(path) as f:
            rows.append(pq.ParquetFile(f).read_row_group(g).slice(i, 1).to_pylist()[0])
    return rows


def _desc(text: str) -> tuple:
    """A key that sorts strings in reverse (so the heap keeps the smallest source and id among equal scores)."""
    return tuple(-ord(c) for c in text) + (1,)


# ---- terminal --------------------------------------------------------------------------------------------------

class Style:
    def __init__(self, colour: bool):
        self.colour = colour

    def marker(self, text: str) -> str:
        return f"\033[1;33m{text}\033[0m" if self.colour else f"**{text}**"

    def bold(self, text: str) -> str:
        return f"\033[1m{text}\033[0m" if self.colour else text


def _fold(text: str, chars: int) -> str:
    """A problem or final part on wrapped lines under its label, cut after `chars` characters (0: whole)."""
    text = " ".join(text.split())
    if chars and len(text) > chars:
        text = f"{text[:chars]} [… {len(text) - chars:,} more characters]"
    return textwrap.fill(text, WIDTH, subsequent_indent=" " * 11, break_long_words=False)


def step_text(step: Step, style: Style, chars: int) -> str:
    pieces, rest = step.pieces, ()
    if chars:
        at = fold_point(step, chars)
        if len(step.text) > at:
            pieces, rest = split_at(step.pieces, at)
    body = "".join(style.marker(t) if m else t for t, m in pieces)
    if rest:
        hidden = sum(m for _, m in rest)
        body += (f" [… {sum(len(t) for t, _ in rest):,} more characters"
                 + (f", {hidden} more marker{'s' * (hidden > 1)}" if hidden else "") + "]")
    return body


def render_text(v: RecordView, style: Style, step_chars: int = 400) -> str:
    """One record for a terminal: a header, the answers, the problem, every step (markers highlighted, a '>' before
    a branch step, long steps folded after `step_chars` characters; 0: never), the final part."""
    head = style.bold(f"== {v.source} / {v.id}")
    lines = [head, f"decision   {v.decision} ({v.reason})", f"verdict    {v.verdict}",
             f"answer     {v.answer if v.answer is not None else '(none extracted)'}",
             f"reference  {v.reference if v.reference else '(none)'}",
             f"branching  {branching(v)}"
             + (f"; branch_score {v.branch_score:.4f}" if v.branch_score is not None else "")
             + (f"; threshold {v.threshold:.4f}" if v.threshold is not None else ""),
             f"problem    {_fold(v.problem, step_chars)}",
             f"steps      {len(v.steps)} ({v.branch_steps} with a marker, marked >)"]
    indent = " " * 8
    for s in v.steps:
        body = [textwrap.fill(ln, WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False,
                              break_on_hyphens=False)
                for ln in step_text(s, style, step_chars).split("\n") if ln.strip()]
        lines.append(f"{'>' if s.branch else ' '}{s.number:>5}  " + "\n".join(body or [indent])[len(indent):])
    if v.cut_chars:
        lines.append(f"           … {v.cut_chars:,} more characters of reasoning not shown")
    lines.append(f"final      {_fold(v.final, step_chars) or '(empty)'}")
    return "\n".join(lines)


def records(folder: str, storage: io.Storage, rid: str | None = None, n: int | None = None,
            source: str | None = None) -> list[RecordView]:
    """The views of the record(s) with id `rid`, else of the `n` most branching dropped ones."""
    lexicon, segmenter = run_settings(folder, storage)
    rows = find(folder, rid, storage, source) if rid is not None else worst(folder, n or 1, storage, source)
    return [view(r, lexicon, segmenter) for r in rows]
