"""Per-chunk partial group-bys of phase 2 and how they combine: the reference source's mean steps per problem
(for the step-ratio proxy) and each source's dominant reasoning markup. Pure pyarrow/numpy; the results equal
the in-memory `job.reference_steps` and `job.markup_by_source` over all rows exactly.
"""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.core.policy import Policy
from raypipe.core.verify import CORRECT
from raypipe.curate.dedup import apply_fixes

REFERENCE_DIR = "_work/reference_steps"  # relative to the run's output
PARTIAL_SCHEMA = pa.schema([("problem_id", pa.string()), ("sum", pa.int64()), ("count", pa.int64())])
REFERENCE_SCHEMA = pa.schema([("problem_id", pa.string()), ("steps", pa.float64())])


def ranked_rows(scored: pa.Table, fixes: pa.Table | None) -> pa.Table:
    """A chunk's scored rows with its fixes applied, duplicates left out (what thresholds are computed on)."""
    fixed = apply_fixes(scored, fixes)
    return fixed.filter(pc.is_null(fixed.column("duplicate_of")))


def reference_partial(ranked: pa.Table, reference_source: str | None, correct_only: bool = False) -> pa.Table:
    """(problem_id, sum of n_steps, count) over the reference source's rows of one chunk (every source's: None;
    only the verified-correct ones: correct_only, as for a reference input)."""
    ref = ranked if reference_source is None else ranked.filter(pc.equal(ranked.column("source"), reference_source))
    if correct_only:
        ref = ref.filter(pc.equal(ref.column("verdict"), CORRECT))
    if ref.num_rows == 0:
        return PARTIAL_SCHEMA.empty_table()
    ref = ref.select(["problem_id", "n_steps"]).cast(pa.schema([("problem_id", pa.string()), ("n_steps", pa.int64())]))
    agg = ref.group_by("problem_id").aggregate([("n_steps", "sum"), ("n_steps", "count")])
    return agg.select(["problem_id", "n_steps_sum", "n_steps_count"]).rename_columns(PARTIAL_SCHEMA.names)


def partition_problems(partial: pa.Table, buckets: int) -> list[pa.Table]:
    b = np.fromiter((zlib.crc32(p.encode("utf-8", "surrogatepass")) % buckets
                     for p in partial.column("problem_id").to_pylist()), np.int64, count=partial.num_rows)
    return [partial.filter(pa.array(b == i)) for i in range(buckets)]


def combine_reference(parts: list[pa.Table]) -> pa.Table:
    """problem_id -> mean steps; float(sum) / count equals np.mean of the integer steps exactly."""
    whole = pa.concat_tables([PARTIAL_SCHEMA.empty_table(), *parts])
    agg = whole.group_by("problem_id").aggregate([("sum", "sum"), ("count", "sum")])
    steps = agg.column("sum_sum").to_numpy().astype(np.float64) / agg.column("count_sum").to_numpy()
    return pa.Table.from_arrays([agg.column("problem_id"), pa.array(steps, pa.float64())], schema=REFERENCE_SCHEMA)


def chunk_reference(table: pa.Table, reference: pa.Table | None) -> dict[str, float]:
    """The reference steps of the problems a chunk holds (a semi-join), as the Policy's small dict."""
    if reference is None or reference.num_rows == 0 or table.num_rows == 0:
        return {}
    wanted = pc.unique(table.column("problem_id").combine_chunks().cast(pa.string()))
    part = reference.filter(pc.is_in(reference.column("problem_id"), value_set=wanted))
    return dict(zip(part.column("problem_id").to_pylist(), part.column("steps").to_pylist()))


def read_reference(output: str, storage: io.Storage, relative: str | None) -> pa.Table | None:
    return io.read_parquet_dir(io.join(output, relative), storage) if relative else None


def chunk_policy(policy: Policy, table: pa.Table, reference: pa.Table | None) -> Policy:
    """The policy a chunk's decisions need: its problems' reference steps when the run wrote them to a file."""
    if not policy.reference_steps_file or policy.reference_steps:
        return policy
    return policy.model_copy(update={"reference_steps": chunk_reference(table, reference)})


def markup_counts(ranked: pa.Table, pos_base: int) -> list[tuple[str, str, int, int]]:
    """(source, markup, count, first position) of one chunk's rows."""
    t = ranked.select(["source", "markup"]).append_column(
        "pos", pa.array(pos_base + np.arange(ranked.num_rows), pa.int64()))
    t = t.filter(pc.invert(pc.is_in(t.column("markup"), value_set=pa.array(["plain", "reasoning_content"]))))
    agg = t.group_by(["source", "markup"]).aggregate([("pos", "count"), ("pos", "min")])
    return list(zip(*(agg.column(c).to_pylist() for c in ("source", "markup", "pos_count", "pos_min"))))


def fold_markup(total: dict, part: list[tuple[str, str, int, int]]) -> None:
    """Add one chunk's markup_counts to the running {(source, markup): [count, first position]}."""
    for source, markup, n, first in part:
        acc = total.setdefault((source, markup), [0, first])
        acc[0] += n
        acc[1] = min(acc[1], first)


def dominant_markup(total: dict) -> dict[str, str]:
    """Per source, its most common markup; a tie goes to the markup seen first (as Counter.most_common)."""
    best: dict[str, tuple[int, int, str]] = {}
    seen: dict[str, int] = {}
    for (source, markup), (n, first) in total.items():
        seen[source] = min(first, seen.get(source, first))
        if source not in best or (n, -first) > (best[source][0], -best[source][1]):
            best[source] = (n, first, markup)
    return {s: best[s][2] for s in sorted(best, key=seen.get)}  # sources in order of first appearance
