"""One reading-markup rule over the whole dataset (between phases 1 and 2).

A response without reasoning markup from a source whose other responses use markup is unfinished: its reasoning
opened in the prompt and never closed, so it is all reasoning with no final part. Phase 1 applies the rule within
each block it reads; this pass applies it across blocks, chunks and files, with the markup most of the source's
responses use in the whole dataset (the manifest's `markup_by_source`, which the online scorer applies too). So the
outputs do not depend on how the input was split. The few records it changes are normalised and scored again; a
chunk without such records is not rewritten, and a rerun finds nothing left to change.
"""
from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.core.schema import RECORD_SCHEMA, harmony_reasoning, split_reasoning
from raypipe.core.scoring import Scorer


def votes(table: pa.Table) -> dict[str, dict[str, int]]:
    """{source: {markup: records}} of a chunk's scored records (their `source` and `markup` columns)."""
    counts = table.group_by(["source", "markup"]).aggregate([([], "count_all")]).to_pylist()
    out: dict[str, dict[str, int]] = {}
    for r in counts:
        out.setdefault(r["source"], {})[r["markup"]] = r["count_all"]
    return out


def expected_markup(per_chunk: list[dict[str, dict[str, int]]]) -> dict[str, str]:
    """Per source, the markup most of its responses use over the dataset (ties: the name first in sort order)."""
    total: dict[str, Counter] = {}
    for chunk in per_chunk:
        for source, markups in chunk.items():
            for markup, n in markups.items():
                if markup not in ("plain", "reasoning_content"):
                    total.setdefault(source, Counter())[markup] += n
    return {s: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for s, c in total.items()}


def needs_fix(chunk_votes: dict[str, dict[str, int]], expected: dict[str, str]) -> bool:
    return any(m.get("plain") and s in expected for s, m in chunk_votes.items())


def fix_table(table: pa.Table, expected: dict[str, str], scorer: Scorer, finish) -> tuple[pa.Table, int]:
    """(the table with its unfinished records normalised and scored again, how many changed); order kept."""
    plain = pc.equal(table.column("markup"), "plain")
    sources = table.column("source").to_pylist()
    mask = [bool(p) and s in expected for p, s in zip(plain.to_pylist(), sources)]
    if not any(mask):
        return table, 0
    picked = table.filter(pa.array(mask))
    rows = picked.select(RECORD_SCHEMA.names).to_pylist()
    for r in rows:
        split = split_reasoning(r["response"], expected[r["source"]])
        thinking = harmony_reasoning(split.thinking) if split.markup == "harmony" else split.thinking
        r.update(thinking=thinking, final=split.final, thinking_start=split.thinking_start,
                 thinking_end=split.thinking_end, final_start=split.final_start, final_end=split.final_end,
                 thought_complete=split.complete, markup=split.markup)
    fixed = finish(scorer.score(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))).cast(table.schema)
    index = pa.array(range(table.num_rows), pa.int64())
    keep = pc.invert(pa.array(mask))
    merged = pa.concat_tables([
        table.filter(keep).append_column("_i", index.filter(keep)),
        fixed.append_column("_i", index.filter(pa.array(mask)))])
    return merged.sort_by("_i").drop_columns(["_i"]), len(rows)


def fix_chunk(uri: str, expected: dict[str, str], scorer: Scorer, finish, storage: io.Storage) -> int:
    """Rewrite one scored chunk file with its unfinished records fixed; the number of records changed."""
    table = io.read_parquet(uri, storage)
    fixed, n = fix_table(table, expected, scorer, finish)
    if n:
        out = io.ParquetStream(uri, storage)
        for batch in fixed.to_batches(max_chunksize=512):
            out.write(pa.Table.from_batches([batch], schema=fixed.schema))
        out.close()
    return n


def read_votes(uri: str, storage: io.Storage) -> str:
    return json.dumps(votes(io.read_parquet(uri, storage, columns=["source", "markup"])))
