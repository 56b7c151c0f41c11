"""One input shard to normalised records and rejects (no Ray here: the pipeline runs this inside actors).

The columnar path (raypipe.core.columnar) handles whole flat-layout files; the row path handles everything else,
including files with malformed lines, where each bad row becomes a reject with its raw text. A record's or reject's
`row` is the row's line in its file as an editor shows it, from 1 (blank lines counted; in Parquet, its position
from 1).
"""
from __future__ import annotations

import json
import posixpath
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.core.columnar import read_jsonl_table
from raypipe.core.errors import LayoutError, RowError
from raypipe.core.formats import FORMATS, InputFormat, detect_format
from raypipe.core.io import RawRow, Storage, parse_jsonl, read_bytes
from raypipe.core.schema import dominant_markup, records_table, rejects_table

MAX_RESPONSE_CHARS = 16 << 20
MIN_RECORD_BYTES = 16  # no record line is shorter; a shorter (blank) line sends the file to the row path


def _raw_text(r: RawRow) -> str:
    if r.raw:
        return r.raw
    return json.dumps(r.value, ensure_ascii=False, default=str)


def file_layout(rows: list[RawRow], uri: str) -> str | None:
    """The layout most rows of a file follow; None when no row parsed; LayoutError when none is known."""
    votes: Counter = Counter()
    seen_keys: Counter = Counter()
    for r in rows:
        if isinstance(r.value, dict):
            seen_keys.update(r.value.keys())
            try:
                votes[detect_format(r.value)] += 1
            except LayoutError:
                pass
    if votes:
        return votes.most_common(1)[0][0]
    if not seen_keys:
        return None
    try:
        detect_format(seen_keys)
    except LayoutError as e:
        raise LayoutError(f"{uri}: {e}") from None
    return None


def _line_bounds(data: bytes) -> np.ndarray | None:
    """(start, end) of every line, or None when a blank or very short line would shift row numbers."""
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(data)]])
    if ends[-1] == starts[-1]:
        starts, ends = starts[:-1], ends[:-1]
    if len(starts) == 0 or (ends - starts).min() < MIN_RECORD_BYTES:
        return None
    return np.stack([starts, ends], axis=1)


def _columnar(uri: str, data: bytes | pa.Table):
    """(records, rejects, n_input) through the columnar path, or None. Rows are the block's, numbered from 0 here."""
    default_source = posixpath.basename(uri).split(".")[0]
    if isinstance(data, pa.Table):
        table = data
        raw = lambda i: json.dumps(table.slice(i, 1).to_pylist()[0], ensure_ascii=False, default=str)  # noqa: E731
    else:
        lines = _line_bounds(data)
        table = read_jsonl_table(data) if lines is not None else None
        if table is None or table.num_rows != len(lines):
            return None
        raw = lambda i: data[lines[i, 0]:lines[i, 1]].decode("utf-8", "replace")  # noqa: E731
    if table.num_rows == 0:
        return None
    got = FORMATS.create("flat").normalize_table(table, default_source, uri)
    if got is None:
        return None
    records, bad = got
    for r in bad:
        r["raw"] = raw(r["row"])
    return records, bad, table.num_rows, raw


def load_shard(uri: str, storage: Storage, max_response_chars: int = MAX_RESPONSE_CHARS,
               fmt: InputFormat | None = None) -> tuple[pa.Table, pa.Table, int]:
    """(records, rejects, input row count) for one whole input file, read with `fmt` (None: the format its rows
    fit). The curation job reads files in bounded blocks instead (raypipe.curate.chunks, load_block)."""
    if uri.endswith(".parquet"):
        fs, path = storage.filesystem(uri)
        return load_block(uri, pq.read_table(path, filesystem=fs), 0, max_response_chars, fmt)
    return load_block(uri, read_bytes(uri, storage), 0, max_response_chars, fmt)


def load_block(uri: str, data: bytes | pa.Table, rows_before: int, max_response_chars: int = MAX_RESPONSE_CHARS,
               fmt: InputFormat | None = None) -> tuple[pa.Table, pa.Table, int]:
    """(records, rejects, input row count) for whole lines of a JSONL file (bytes) or rows of a Parquet file (a
    table) that come after `rows_before` rows (lines) of the file `uri`: its first is row rows_before + 1."""
    fast = _columnar(uri, data) if fmt is None or fmt.name == "flat" else None
    if fast is not None:
        records, bad, n_input, raw = fast
        lengths = pc.utf8_length(records.column("response"))
        over = pc.greater(lengths, max_response_chars)
        if pc.any(over).as_py():
            for row, n in zip(records.filter(over).column("row").to_pylist(), lengths.filter(over).to_pylist()):
                bad.append({"shard": uri, "row": row, "raw": raw(row),
                            "reason": f"invalid record: response of {n} chars is over the limit of {max_response_chars}"})
            records = records.filter(pc.invert(over))
        at = records.schema.get_field_index("row")
        records = records.set_column(at, "row", pc.add(records.column("row"), pa.scalar(rows_before + 1, pa.int64())))
        for r in bad:
            r["row"] += rows_before + 1
        return records, rejects_table(sorted(bad, key=lambda r: r["row"])), n_input
    return _load_rows(uri, data, rows_before, max_response_chars, fmt)


def _raw_rows(data: bytes | pa.Table, rows_before: int) -> list[RawRow]:
    if isinstance(data, pa.Table):
        return [RawRow(i, rec, "") for i, rec in enumerate(data.to_pylist(), start=rows_before + 1)]
    return list(parse_jsonl(data, rows_before + 1))


def rejected_block(uri: str, data: bytes | pa.Table, rows_before: int, reason: str) -> tuple[pa.Table, pa.Table, int]:
    """load_block's result for a block none of whose rows can be read (fields that fit no format, with
    --skip-unreadable): every row a reject with the reason."""
    rows = _raw_rows(data, rows_before)
    return records_table([]), rejects_table(
        [{"shard": uri, "row": r.index, "raw": _raw_text(r), "reason": r.error or reason} for r in rows]), len(rows)


def _load_rows(uri: str, data: bytes | pa.Table, rows_before: int, max_response_chars: int,
               fmt: InputFormat | None) -> tuple[pa.Table, pa.Table, int]:
    rows = _raw_rows(data, rows_before)
    if fmt is None:
        layout = file_layout(rows, uri)
        fmt = FORMATS.create(layout) if layout else None
    default_source = posixpath.basename(uri).split(".")[0]

    def read(r: RawRow, markup: dict | None = None) -> tuple[list[dict], list[dict]]:
        if r.error:
            return [], [{"shard": uri, "row": r.index, "raw": _raw_text(r), "reason": r.error}]
        try:
            if fmt is None:
                raise RowError("record is not an object")
            records = fmt.records(r.value, default_source, uri, r.index, markup)
        except RowError as e:  # the row as a whole: one reject
            return [], [{"shard": uri, "row": r.index, "raw": _raw_text(r), "reason": f"invalid record: {e}"}]
        long = [x for x in records if len(x["response"]) > max_response_chars]
        return [x for x in records if x not in long], [
            {"shard": uri, "row": r.index, "record": x["record"], "raw": _raw_text(r), "id": x["id"],
             "source": x["source"], "reason": f"invalid record: response of {len(x['response'])} chars is over the "
             f"limit of {max_response_chars}"} for x in long]

    per_row = [read(r) for r in rows]
    if fmt is not None and fmt.fixed_markup is None:
        # A response without markup from a source whose other responses use markup never closed its reasoning.
        good = [g for got, _ in per_row for g in got]
        markup = dominant_markup([g["source"] for g in good], [g["markup"] for g in good])
        if markup:
            per_row = [read(r, markup) if any(g["markup"] == "plain" and g["source"] in markup for g in got)
                       else (got, bad) for r, (got, bad) in zip(rows, per_row)]
    return (records_table([g for got, _ in per_row for g in got]),
            rejects_table([b for _, bad in per_row for b in bad]), len(rows))
