"""Columnar normalisation of flat-layout tables: the fast path of schema.normalize_row for whole files.

A JSONL file that Arrow's C++ reader parses, or a Parquet file, in the flat layout, is normalised without
building a Python dict per row: the reasoning/final split runs over the response bytes, the thinking and final
columns are gathered as Arrow buffers. Anything this path does not handle exactly like the row path (other
layouts, several alternative key columns, floats, non-string fields) returns None, and the caller uses the row
path. tests/test_columnar.py checks that both paths give identical tables.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from raypipe.core.schema import (
    ANSWER_KEYS,
    PROBLEM_KEYS,
    RECORD_SCHEMA,
    RESPONSE_KEYS,
    dominant_markup,
    harmony_reasoning,
    markup_bounds,
    markups_in,
    problem_id,
    stable_hash,
)


def read_jsonl_table(data: bytes) -> pa.Table | None:
    """Parse JSONL with Arrow's reader; None when any line is not valid JSON of one consistent type."""
    if not data.strip():
        return None
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    longest = int(np.diff(newlines, prepend=-1).max()) if len(newlines) else len(data)
    longest = max(longest, len(data) - (int(newlines[-1]) + 1 if len(newlines) else 0))
    opts = pajson.ReadOptions(block_size=max(1 << 22, 2 * longest + 2), use_threads=False)
    try:
        return pajson.read_json(io.BytesIO(data), read_options=opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _present(table: pa.Table, keys) -> list[str]:
    return [k for k in keys if k in table.column_names]


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray | None:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    if pa.types.is_integer(col.type):
        return col.cast(pa.string())
    if pa.types.is_null(col.type):
        return col.cast(pa.string())
    return None  # floats print differently from Python's str(); structs and lists are errors: the row path says so


def _gather(data: bytes, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    body = b"".join([data[s:e] for s, e in zip(starts.tolist(), ends.tolist())])
    arr = pa.Array.from_buffers(pa.large_string(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    return arr.cast(pa.string())


def _char_offsets(response: pa.Array, data: bytes, base: np.ndarray, byte_offsets: np.ndarray) -> np.ndarray:
    """Byte offsets (relative to each row, at character boundaries) to code-point offsets: the UTF-8 length of
    each prefix, measured by one Arrow kernel over the spans between a row's sorted offsets. Only non-ASCII rows
    need it."""
    out = byte_offsets.copy()
    rows = np.flatnonzero(~pc.string_is_ascii(response).to_numpy(zero_copy_only=False))
    if not rows.size:
        return out
    order = np.argsort(byte_offsets[rows], axis=1, kind="stable")
    bounds = np.take_along_axis(byte_offsets[rows], order, axis=1) + base[rows, None]
    bounds = np.concatenate([base[rows, None], bounds], axis=1).ravel()  # ascending: rows do not overlap
    spans = pa.Array.from_buffers(pa.large_string(), bounds.size - 1, [None, pa.py_buffer(bounds), pa.py_buffer(data)])
    lengths = np.append(pc.utf8_length(spans).to_numpy(zero_copy_only=False), 0).reshape(-1, 5)[:, :4]
    chars = np.empty_like(order)
    np.put_along_axis(chars, order, np.cumsum(lengths, axis=1), axis=1)
    out[rows] = chars
    return out


def normalize_flat_table(table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
    """(records, rejects) for a flat-layout table, or None when the row path must handle it."""
    names = table.column_names
    pks, rks, aks = _present(table, PROBLEM_KEYS), _present(table, RESPONSE_KEYS), _present(table, ANSWER_KEYS)
    if len(pks) != 1 or len(rks) != 1 or len(aks) > 1 or "reasoning_content" in names or "messages" in names \
            or "conversations" in names:
        return None
    problem, response = _as_text(table[pks[0]]), _as_text(table[rks[0]])
    answer = _as_text(table[aks[0]]) if aks else pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    ids = _as_text(table["id"]) if "id" in names else pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    src_col = "source" if "source" in names else ("model" if "model" in names else None)
    if src_col == "source" and "model" in names:
        return None  # per-row choice between source and model: the row path decides
    source = _as_text(table[src_col]) if src_col else pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    if any(c is None for c in (problem, response, answer, ids, source)) or (src_col and table[src_col].null_count):
        return None
    rows = np.arange(table.num_rows)
    bad_problem = problem.is_null().to_numpy(zero_copy_only=False)
    bad_response = response.is_null().to_numpy(zero_copy_only=False)
    rejects = [{"shard": shard, "row": int(i), "reason": f"invalid record: missing field: one of "
                f"{PROBLEM_KEYS if bad_problem[i] else RESPONSE_KEYS}"} for i in np.flatnonzero(bad_problem | bad_response)]
    good = ~(bad_problem | bad_response)
    if rejects:
        keep = pa.array(good)
        table, problem, response, answer, ids, source = (x.filter(keep) for x in (table, problem, response, answer, ids, source))
        rows = rows[good]
    n = table.num_rows
    resp = response.combine_chunks().cast(pa.large_string())
    offs = np.frombuffer(resp.buffers()[1], dtype=np.int64)[resp.offset:resp.offset + n + 1]
    data = resp.buffers()[2].to_pybytes() if n else b""
    sources = source.fill_null(default_source).to_pylist()
    kinds = markups_in(data)
    bounds = [markup_bounds(data, lo, hi, None, kinds) for lo, hi in zip(offs[:-1].tolist(), offs[1:].tolist())]
    markups = [b[5] for b in bounds]
    expected = dominant_markup(sources, markups)
    for i in range(n):
        if markups[i] == "plain" and sources[i] in expected:
            bounds[i] = markup_bounds(data, int(offs[i]), int(offs[i + 1]), expected[sources[i]], kinds)
    b = np.array([x[:4] for x in bounds], dtype=np.int64).reshape(n, 4)
    thinking, final = _gather(data, b[:, 0], b[:, 1]), _gather(data, b[:, 2], b[:, 3])
    harmony = [i for i in range(n) if bounds[i][5] == "harmony"]
    if harmony:  # a harmony span may hold several messages and tool calls: the row path's plain text
        texts = thinking.to_pylist()
        for i in harmony:
            texts[i] = harmony_reasoning(texts[i])
        thinking = pa.array(texts, pa.string())
    chars = _char_offsets(resp, data, offs[:-1], b - offs[:-1, None])
    problems = problem.to_pylist()
    id_list = ids.to_pylist()
    if any(i is None for i in id_list):
        resp_py = resp.to_pylist()
        id_list = [i if i is not None else stable_hash(s, p, r) for i, s, p, r in zip(id_list, sources, problems, resp_py)]
    pid_cache: dict[str, str] = {}
    pids = [pid_cache.get(p) or pid_cache.setdefault(p, problem_id(p)) for p in problems]
    consumed = {pks[0], rks[0], "id", *aks, *([src_col] if src_col else [])}
    extra = [c for c in names if c not in consumed]
    extra_values = [table[c].to_pylist() for c in extra]
    meta = [json.dumps({k: v for k, v in zip(extra, vals) if v is not None}, ensure_ascii=False, default=str)
            for vals in zip(*extra_values)] if extra else ["{}"] * n
    columns = {
        "id": pa.array(id_list, pa.string()), "source": pa.array(sources, pa.string()),
        "problem_id": pa.array(pids, pa.string()), "problem": problem.combine_chunks(),
        "reference_answer": answer.fill_null("").combine_chunks(), "response": resp.cast(pa.string()),
        "thinking": thinking, "final": final,
        "thinking_start": pa.array(chars[:, 0]), "thinking_end": pa.array(chars[:, 1]),
        "final_start": pa.array(chars[:, 2]), "final_end": pa.array(chars[:, 3]),
        "thought_complete": pa.array([x[4] for x in bounds], pa.bool_()),
        "markup": pa.array([x[5] for x in bounds], pa.string()), "meta": pa.array(meta, pa.string()),
        "format": pa.array(["flat"] * n, pa.string()), "shard": pa.array([shard] * n, pa.string()),
        "row": pa.array(rows, pa.int64()), "record": pa.array(np.zeros(n, dtype=np.int64)),
    }
    return pa.Table.from_arrays([columns[f.name] for f in RECORD_SCHEMA], schema=RECORD_SCHEMA), rejects
