"""Phase 2 of the curation job: duplicates, reference steps, exact thresholds and markup, with a driver that holds
O(sources x buckets) values, never O(records).

    policy, summary = select_policy(config, chunks, storage, executor)

`chunks`: [{"key", "uri", "order"}]: a chunk's scored records are `_work/scored/part-{key}.parquet`, `uri` is its
input file and `order` its place in the input order. Every step is a task over a run of chunks or one hash bucket, given
to the executor (raypipe.executor: fractional CPUs on Ray, no actor pool, so nothing can starve the tasks on a
small machine; or the calling process); the pure logic is in
raypipe.curate.dedup_buckets, groupby and radix. Writes `_work/dedup/part-{key}.parquet` (the fixes phase 3
applies), `_work/reference_steps/` (with --reference-source) and `_work/select/keys/` (each chunk's rank keys,
read again by the later passes). The audit of the references (raypipe.curate.audit) runs between the duplicates
and the thresholds, so that rows kept out for a suspect reference are not ranked.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.core.graders import GRADERS
from raypipe.core.policy import Policy, suspect_rows
from raypipe.core.registry import load_plugins
from raypipe.core.scoring import ScoringConfig
from raypipe.curate import audit, groupby, radix
from raypipe.curate.config import CurateConfig
from raypipe.curate.dedup import KEY_COLUMNS
from raypipe.executor import Executor
from raypipe.curate.dedup_buckets import (bucket_fixes, bucket_renames, chunk_fix_files, partition_chunk,
                                          route_renames)

TASK_CPUS = 0.5
TASKS_PER_CPU = 2  # the per-chunk steps run as this many tasks per CPU of the cluster, each over a run of chunks


def _scored(output: str, key: str) -> str:
    return io.join(output, "_work", "scored", f"part-{key}.parquet")


def _keys_uri(output: str, key: str) -> str:
    return io.join(output, "_work", "select", "keys", f"part-{key}.parquet")


def _fixes(output: str, key: str, storage: io.Storage) -> pa.Table | None:
    uri = io.join(output, "_work", "dedup", f"part-{key}.parquet")
    return io.read_parquet(uri, storage) if io.exists(uri, storage) else None


# ---- the tasks (plain functions; select_policy submits them to the executor) ----

def _runs(n: int, cpus: float) -> list[range]:
    """Contiguous runs of the n chunks (in input order), TASKS_PER_CPU per CPU: a task per chunk cost more in
    scheduling than its work (3.7 s on Ray against 1.7 s in one process, for 64 chunks of 16 MB)."""
    size = -(-n // max(1, min(n, int(TASKS_PER_CPU * cpus))))
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _batched(fn, combine, output, storage, items):
    """One task's run of chunks: fn(output, storage, *item) for each item, combined into one result."""
    return combine([fn(output, storage, *item) for item in items])


def _concat(results):
    """Per output, one chunk run's tables (in chunk order) as one table."""
    if isinstance(results[0], pa.Table):
        return pa.concat_tables(results)
    return tuple(pa.concat_tables(parts) for parts in zip(*results))


def _concat_with_sources(results):
    return (*_concat([r[:-1] for r in results]), sorted({s for r in results for s in r[-1]}))


def _fold_keys(results):
    markups: dict = {}
    for _, m, _ in results:
        groupby.fold_markup(markups, m)
    return (_fold_counts([r[0] for r in results]),
            [(s, mk, n, first) for (s, mk), (n, first) in markups.items()],
            sorted({s for r in results for s in r[2]}))


def _fold_counts(results):
    total: dict[str, np.ndarray] = {}
    for part in results:
        radix.add_counts(total, part)
    return {gid: (np.arange(len(h)), h) for gid, h in total.items()}


def _fold_fetched(results):
    rows: dict[str, list] = {}
    for part in results:
        for gid, t in part.items():
            rows.setdefault(gid, []).append(t)
    return {gid: pa.concat_tables(p) for gid, p in rows.items()}


def _partition(output, storage, key, chunk, shard_order, buckets):
    keys = io.read_parquet(_scored(output, key), storage, columns=KEY_COLUMNS)
    content, ids = partition_chunk(keys, chunk, shard_order, buckets)
    return (*content, *ids)


def _renames(buckets, *parts):
    return tuple(route_renames(bucket_renames(pa.concat_tables(parts)), buckets)) if buckets > 1 else \
        bucket_renames(pa.concat_tables(parts))


def _bucket_fixes(groups, n_rows, *parts):
    fixes = bucket_fixes(pa.concat_tables(parts[:n_rows]), pa.concat_tables(parts[n_rows:]))
    if groups == 1:
        return fixes
    chunk = fixes.column("chunk").to_numpy()
    return tuple(fixes.filter(pa.array(chunk % groups == g)) for g in range(groups))


def _write_fixes(output, storage, keys, *parts):
    fixes = pa.concat_tables(parts)
    for chunk, table in chunk_fix_files(fixes).items():
        io.write_parquet(table, io.join(output, "_work", "dedup", f"part-{keys[chunk]}.parquet"), storage)
    return {"duplicates": fixes.num_rows - fixes.column("duplicate_of").null_count,
            "renamed": fixes.num_rows - fixes.column("new_id").null_count}


def _reference_partial(output, storage, key, columns, reference_source, buckets, correct_only=False):
    ranked = groupby.ranked_rows(io.read_parquet(_scored(output, key), storage, columns=columns),
                                 _fixes(output, key, storage))
    parts = groupby.partition_problems(groupby.reference_partial(ranked, reference_source, correct_only), buckets)
    return (*parts, pc.unique(ranked.column("source")).to_pylist())


def _reference_combine(output, storage, bucket, *parts):
    table = groupby.combine_reference(list(parts))
    io.write_parquet(table, io.join(output, groupby.REFERENCE_DIR, f"part-{bucket:05d}.parquet"), storage)
    return table.num_rows


def _audit_partial(output, storage, key, buckets):
    fs, path = storage.filesystem(_scored(output, key))
    if set(audit.COLUMNS) - set(pq.read_schema(path, filesystem=fs).names):  # scored without answers: no audit
        parts = [audit.PARTIAL_SCHEMA.empty_table()] * buckets
    else:
        columns = list(dict.fromkeys(KEY_COLUMNS + audit.COLUMNS))
        ranked = groupby.ranked_rows(io.read_parquet(_scored(output, key), storage, columns=columns),
                                     _fixes(output, key, storage))
        parts = groupby.partition_problems(audit.partial(ranked), buckets)
    return tuple(parts) if buckets > 1 else parts[0]


def _audit_combine(scoring_json, plugins, min_samples, *parts):
    load_plugins(plugins)
    scoring = ScoringConfig.model_validate_json(scoring_json)
    graders = []  # set up at the first comparison: most buckets need none (and no verifier process)

    def grade(pairs):
        if not graders:
            graders.append(GRADERS.create(scoring.grader, scoring).setup())
        return graders[0].grade_many(pairs)
    try:
        return audit.suspects(list(parts), grade, min_samples)
    finally:
        for g in graders:
            g.close()


def _keys_pass(output, storage, key, columns, pos_base, policy_json, plugins):
    load_plugins(plugins)  # the run's own proxies and rules, registered in this worker too
    policy = Policy.model_validate_json(policy_json)
    ranked = groupby.ranked_rows(io.read_parquet(_scored(output, key), storage, columns=columns),
                                 _fixes(output, key, storage))
    if policy.reference_steps_file:
        reference = groupby.read_reference(output, storage, policy.reference_steps_file)
        policy = groupby.chunk_policy(policy, ranked, reference)
    if policy.suspect_references:  # rows kept out for their reference are not ranked
        ranked = ranked.filter(pa.array(~suspect_rows(ranked, policy)))
    keys = radix.key_table(ranked, policy, pos_base)
    io.write_parquet(keys, _keys_uri(output, key), storage)
    return (radix.count_chunk(keys, None), groupby.markup_counts(ranked, pos_base),
            pc.unique(ranked.column("source")).to_pylist())


def _count(output, storage, key, groups):
    return radix.count_chunk(io.read_parquet(_keys_uri(output, key), storage), groups)


def _fetch(output, storage, key, groups):
    return radix.fetch_chunk(io.read_parquet(_keys_uri(output, key), storage), groups)


def rank_columns(config: CurateConfig) -> list[str]:
    needed = config.policy().columns() + KEY_COLUMNS + ["markup"]
    if config.reference_source or config.reference_input:
        needed += ["problem_id", "n_steps"]
    if config.on_suspect_reference == "keep-out":  # (with problem_id, branch_scores reads n_steps too)
        needed += ["problem_id", "reference_answer", "n_steps"]
    return list(dict.fromkeys(needed))


def reference_folder(output: str) -> str:
    """Where phase 1 scores a --reference-input (never written to curated/ or dropped/)."""
    return io.join(output, "_work", "reference")


def select_policy(config: CurateConfig, chunks: list[dict], storage: io.Storage, ex: Executor,
                  buckets: int | None = None, bucket_limit: int = 4096,
                  reference_chunks: list[str] = (), frozen: Policy | None = None) -> tuple[Policy, dict]:
    """Duplicate fixes, the audit of the references, reference steps, exact thresholds and markup_by_source over all
    scored chunks. `reference_chunks`: the keys of the --reference-input's chunks, scored under
    reference_folder(output). `frozen`: an earlier run's policy (--policy-from), returned after the duplicates and
    the audit instead of measuring one. The summary's `suspect_references` lists the audit's findings."""
    out = config.output
    chunks = sorted(chunks, key=lambda c: c["order"])
    n = len(chunks)
    # a bucket per GiB of input (up to 64): each dedup task holds about a GiB's records' keys
    b = buckets or max(1, min(64, n, -(-sum(c.get("nbytes", 1 << 30) for c in chunks) // (1 << 30))))
    shard_order: dict[str, int] = {}
    for c in chunks:
        shard_order.setdefault(c["uri"], len(shard_order))
    names = sorted(f"part-{c['key']}.parquet" for c in chunks)  # the order the old read_parquet_dir concatenated
    pos_base = {c["key"]: names.index(f"part-{c['key']}.parquet") << 32 for c in chunks}
    def task(f, *args, num_returns=1):
        return ex.submit(f, *args, cpus=TASK_CPUS, num_returns=num_returns)

    def per_run(fn, combine, items, num_returns=1, where=out):
        """fn over each item, as one task per run of chunks (_runs), combined in the task."""
        return [task(_batched, fn, combine, where, storage, [items[i] for i in r], num_returns=num_returns)
                for r in _runs(len(items), ex.cpus())]
    summary: dict = {"chunks": n, "buckets": b, "duplicates": 0, "renamed": 0, "suspect_references": []}
    policy = config.policy()
    if n == 0:
        return frozen or policy, summary

    # 1. duplicates and shared ids: partition by hash, one task per bucket, fixes written per chunk
    io.remove_tree(io.join(out, "_work", "dedup"), storage)
    parts = per_run(_partition, _concat, [(c["key"], i, shard_order, b) for i, c in enumerate(chunks)], 2 * b)
    renames = [task(_renames, b, *(p[b + j] for p in parts), num_returns=b) for j in range(b)]
    renames = [r if isinstance(r, list) else [r] for r in renames]
    fixes = [task(_bucket_fixes, b, len(parts), *(p[j] for p in parts), *(r[j] for r in renames), num_returns=b)
             for j in range(b)]
    fixes = [f if isinstance(f, list) else [f] for f in fixes]
    del parts, renames
    writes = [task(_write_fixes, out, storage, {i: c["key"] for i, c in enumerate(chunks) if i % b == g},
                   *(f[g] for f in fixes)) for g in range(b)]
    del fixes

    def add_dedup(counts):
        summary["duplicates"] += counts["duplicates"]
        summary["renamed"] += counts["renamed"]
    ex.gather(writes, add_dedup)

    # 2. the audit: (problem, reference, answer, source) tallies per chunk, verified per problem bucket
    parts = per_run(_audit_partial, _concat, [(c["key"], b) for c in chunks], b)
    parts = [p if isinstance(p, list) else [p] for p in parts]
    found = [task(_audit_combine, config.scoring().model_dump_json(), list(config.plugins),
                  config.suspect_min_samples, *(p[j] for p in parts)) for j in range(b)]
    del parts
    ex.gather(found, summary["suspect_references"].extend)
    summary["suspect_references"].sort(key=lambda s: (s["problem_id"], s["reference"]))
    if frozen is not None:
        return frozen, summary
    if config.on_suspect_reference == "keep-out":
        policy = policy.model_copy(update={"suspect_references": [
            (s["problem_id"], s["reference"]) for s in summary["suspect_references"]]})

    # 3. reference steps: (problem_id -> sum, count) per chunk, combined per problem bucket into a Parquet folder
    columns = rank_columns(config)
    sources: set[str] = set()
    if config.reference_input or config.reference_source:
        # another input's steps (scored by phase 1 into _work/reference/, verified-correct rows) or this input's
        where, keys = (reference_folder(out), reference_chunks) if config.reference_input else \
            (out, [c["key"] for c in chunks])
        io.remove_tree(io.join(out, groupby.REFERENCE_DIR), storage)
        partial = per_run(_reference_partial, _concat_with_sources,
                          [(key, columns, config.reference_source, b, bool(config.reference_input)) for key in keys],
                          b + 1, where)
        seen: set[str] = set()
        ex.gather([p[b] for p in partial], seen.update)
        if not config.reference_input:
            sources |= seen
        combined = [task(_reference_combine, out, storage, j, *(p[j] for p in partial)) for j in range(b)]
        del partial
        problems = sum(ex.get(combined))
        if problems == 0:
            what = (f"--reference-input {config.reference_input}: no verified-correct rows"
                    + (f" of source {config.reference_source!r}" if config.reference_source else "")
                    if config.reference_input else f"--reference-source {config.reference_source!r} is not in the data")
            raise ValueError(f"{what}; sources: {sorted(seen)}")
        summary["reference_problems"] = problems
        policy = policy.model_copy(update={"reference_steps_file": groupby.REFERENCE_DIR})

    # 4. the rank keys of every chunk (written once), markup counts, then radix passes over the key files
    io.remove_tree(io.join(out, "_work", "select"), storage)
    first: dict[str, np.ndarray] = {}
    markups: dict = {}

    def add_keys(result):
        radix.add_counts(first, result[0])
        groupby.fold_markup(markups, result[1])
        sources.update(result[2])
    policy_json = policy.model_dump_json()
    ex.gather(per_run(_keys_pass, _fold_keys, [(c["key"], columns, pos_base[c["key"]], policy_json,
                                                list(config.plugins)) for c in chunks]), add_keys)

    def count_pass(groups):
        if groups is None:
            return first
        total: dict[str, np.ndarray] = {}
        ex.gather(per_run(_count, _fold_counts, [(c["key"], groups) for c in chunks]),
                  lambda part: radix.add_counts(total, part))
        return total

    def fetch_pass(groups):
        parts: list[dict] = []
        ex.gather(per_run(_fetch, _fold_fetched, [(c["key"], groups) for c in chunks]), parts.append)
        return _fold_fetched(parts)

    policy, stats = radix.select_thresholds(policy, count_pass, fetch_pass, bucket_limit, sources)
    policy = policy.model_copy(update={"markup_by_source": groupby.dominant_markup(markups)})
    summary.update(stats)
    return policy, summary
