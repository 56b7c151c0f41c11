"""Phase 2 without the rows on the driver: the radix select, the bucketed dedup and the partial group-bys give
exactly what the in-memory reference implementations (compute_thresholds, find_duplicates, ...) give."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from raypipe.core import io
from raypipe.core.policy import Policy
from raypipe.curate import groupby
from raypipe.curate.dedup import FIX_SCHEMA, apply_fixes, find_duplicates
from raypipe.curate.dedup_buckets import fixes_in_process
from raypipe.curate.radix import key_table, thresholds_from_tables
from raypipe.curate.exact_thresholds import compute_thresholds


def markup_by_source(ranks: pa.Table) -> dict[str, str]:
    """The in-memory reference: the markup most of a source's records use."""
    from raypipe.core.schema import dominant_markup

    return dominant_markup(ranks.column("source").to_pylist(), ranks.column("markup").to_pylist())


def reference_steps(ranks: pa.Table, reference_source: str) -> dict[str, float]:
    """The in-memory reference: per problem, the mean n_steps of the reference source's records."""
    import pyarrow.compute as pc
    from collections import defaultdict

    ref = ranks.filter(pc.equal(ranks.column("source"), reference_source))
    if ref.num_rows == 0:
        sources = sorted(set(ranks.column("source").to_pylist()))
        raise ValueError(f"--reference-source {reference_source!r} is not in the data; sources: {sources}")
    sums: dict[str, list] = defaultdict(list)
    for pid, n in zip(ref.column("problem_id").to_pylist(), ref.column("n_steps").to_pylist()):
        sums[pid].append(n)
    return {pid: float(np.mean(v)) for pid, v in sums.items()}

pytestmark = pytest.mark.timeout(300)

SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 0.5, 1.0]


def _rows(seed: int, sizes: list[int], tie_share: float) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for s, n in enumerate(sizes):
        for i in range(n):
            r = rng.random()
            ratio = 0.0 if r < tie_share else float(rng.choice(SPECIAL)) if r < tie_share + 0.1 else float(rng.random())
            rows.append({"source": f"s{s}", "id": f"{i % 3}-{i}", "problem_id": f"p{int(rng.integers(0, 6))}",
                         "verdict": "correct" if rng.random() < 0.85 else "wrong", "branch_ratio": ratio,
                         "n_steps": int(rng.integers(0, 4)), "n_tokens": int(rng.integers(1, 4)),
                         "markup": str(rng.choice(["think", "plain", "harmony"]))})
    rows.append({"source": "only-wrong", "id": "w", "problem_id": "p0", "verdict": "wrong", "branch_ratio": 0.1,
                 "n_steps": 1, "n_tokens": 1, "markup": "think"})
    return rows


def _check(rows: list[dict], policy: Policy, chunk: int, bucket_limit: int) -> dict:
    table = pa.Table.from_pylist(rows)
    if policy.reference_source:
        policy = policy.model_copy(update={"reference_steps": reference_steps(table, policy.reference_source)})
    old = compute_thresholds(table, policy)
    chunks = [table.slice(i, chunk) for i in range(0, table.num_rows, chunk)]
    keys = [key_table(c, policy, i << 32) for i, c in enumerate(chunks)]
    sources = set(table.column("source").to_pylist())
    new, stats = thresholds_from_tables(lambda: keys, policy, bucket_limit, sources)
    assert new.model_dump_json() == old.model_dump_json()
    return stats


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.sampled_from([1, 2, 3, 7, 40, 400]), min_size=1, max_size=4),
       q=st.sampled_from([0.0, 0.001, 0.05, 0.1, 0.5, 0.9, 0.999, 1.0]), tie=st.sampled_from([0.0, 0.6, 0.95]),
       rule=st.sampled_from(["top", "random", "longest", "keep-all"]), proxy=st.sampled_from(["keyword-share", "step-ratio"]),
       chunk=st.sampled_from([1, 7, 100, 10_000]), limit=st.sampled_from([1, 3, 4096]))
def test_radix_thresholds_equal_the_in_memory_ones(seed, sizes, q, tie, rule, proxy, chunk, limit):
    policy = Policy(rule=rule, drop_top=q, seed=seed % 5, proxy=proxy,
                    reference_source="s0" if proxy == "step-ratio" else None)
    _check(_rows(seed, sizes, tie), policy, chunk, limit)


def test_a_million_tied_rows_stay_bounded():
    """Heavy ties at branch_ratio = 0: the tie-break bits split them; only small buckets are fetched."""
    n = 200_000
    rng = np.random.default_rng(1)
    ratio = np.where(rng.random(n) < 0.97, 0.0, rng.random(n))
    table = pa.table({"source": ["a"] * n, "id": [str(i) for i in range(n)], "verdict": ["correct"] * n,
                      "branch_ratio": ratio})
    policy = Policy(drop_top=0.5)
    old = compute_thresholds(table, policy)
    keys = [key_table(table.slice(i, 50_000), policy, i) for i in range(0, n, 50_000)]
    new, stats = thresholds_from_tables(lambda: keys, policy, bucket_limit=64)
    assert new.model_dump_json() == old.model_dump_json()
    assert stats["fetched"] <= 2 * 64


def _key_rows(rnd: random.Random, shards: list[str]) -> list[dict]:
    rows = []
    for sh in shards:
        for r in range(rnd.randint(0, 9)):
            for rec in range(rnd.randint(1, 2)):
                src = rnd.choice(["A", "B"])
                rows.append(dict(shard=sh, row=r, record=rec, source=src,
                                 id=rnd.choice(["x", "x#2", "x#3", "x#2#2", "y", "z#0", "x#", f"u{r}"]),
                                 content_hash=f"{src}-{rnd.randint(0, 4)}"))
    return rows


KEY_SCHEMA = pa.schema([("shard", pa.string()), ("row", pa.int64()), ("record", pa.int64()), ("source", pa.string()),
                        ("id", pa.string()), ("content_hash", pa.string())])


def _by_key(rows):
    return sorted(rows, key=lambda d: (d["shard"], d["row"], d["record"]))


@pytest.mark.parametrize("seed", range(60))
def test_bucketed_dedup_equals_find_duplicates(seed):
    rnd = random.Random(seed)
    shards = [f"s3://b/in{i}.jsonl" for i in range(3)]
    rows = _key_rows(rnd, shards)
    chunks = []
    for sh in shards:  # each shard in two chunks, by row range
        rs = [r for r in rows if r["shard"] == sh]
        cut = rnd.randint(0, 9)
        chunks += [pa.Table.from_pylist([r for r in rs if r["row"] < cut], schema=KEY_SCHEMA),
                   pa.Table.from_pylist([r for r in rs if r["row"] >= cut], schema=KEY_SCHEMA)]
    order = {s: i for i, s in enumerate(shards)}
    new = fixes_in_process(chunks, order, buckets=rnd.choice([1, 2, 3, 7]))
    whole = pa.concat_tables(chunks)
    old = find_duplicates(whole, order) if whole.num_rows else FIX_SCHEMA.empty_table()
    assert _by_key(old.to_pylist()) == _by_key([r for t in new.values() for r in t.to_pylist()])
    for c, t in new.items():
        assert t.schema == FIX_SCHEMA
        mine = set(zip(*(chunks[c].column(k).to_pylist() for k in ("shard", "row", "record"))))
        assert all((r["shard"], r["row"], r["record"]) in mine for r in t.to_pylist())


def test_dedup_hand_built_clashes():
    rows = [dict(shard="a", row=0, record=0, source="S", id="x", content_hash="h1"),
            dict(shard="a", row=1, record=0, source="S", id="x", content_hash="h2"),   # -> x#3 (x#2 is an input id)
            dict(shard="b", row=0, record=0, source="S", id="x#2", content_hash="h3"),
            dict(shard="b", row=1, record=0, source="S", id="x", content_hash="h1"),   # duplicate of x, -> x#4
            dict(shard="b", row=1, record=1, source="T", id="x", content_hash="h4")]   # other source: no clash
    chunks = [pa.Table.from_pylist(rows[:2], schema=KEY_SCHEMA), pa.Table.from_pylist(rows[2:], schema=KEY_SCHEMA)]
    new = fixes_in_process(chunks, {"a": 0, "b": 1}, buckets=3)
    got = _by_key([r for t in new.values() for r in t.to_pylist()])
    assert got == [{"shard": "a", "row": 1, "record": 0, "new_id": "x#3", "duplicate_of": None},
                   {"shard": "b", "row": 1, "record": 0, "new_id": "x#4", "duplicate_of": "x"}]
    assert got == _by_key(find_duplicates(pa.concat_tables(chunks), {"a": 0, "b": 1}).to_pylist())


@pytest.mark.parametrize("seed", range(5))
def test_reference_steps_and_markup_from_partials(seed):
    rows = _rows(seed, [50, 30, 5], 0.3)
    table = pa.Table.from_pylist(rows)
    parts = [groupby.reference_partial(table.slice(i, 13), "s0") for i in range(0, table.num_rows, 13)]
    ref = groupby.combine_reference(parts)
    assert dict(zip(ref.column("problem_id").to_pylist(), ref.column("steps").to_pylist())) == \
        reference_steps(table, "s0")
    total: dict = {}
    for i in range(0, table.num_rows, 13):
        groupby.fold_markup(total, groupby.markup_counts(table.slice(i, 13), i))
    assert list(groupby.dominant_markup(total).items()) == list(markup_by_source(table).items())


def test_select_policy_on_ray_equals_the_driver_path(ray_local, tmp_path):
    """Chunk files on disk, the Ray tasks, a tiny bucket limit: the same policy and fixes as the old phase 2."""
    from raypipe.executor import RayExecutor

    check_select_policy(RayExecutor(), tmp_path)


@pytest.mark.parametrize("threads", [1, 3])
def test_select_policy_in_process_equals_the_driver_path(tmp_path, threads):
    """The same tasks through the in-process executor (calls one after another, or in threads as the job's driver
    runs them): no Ray, the same policy and fixes."""
    from raypipe.executor import LocalExecutor

    check_select_policy(LocalExecutor(2, threads=threads), tmp_path)


def check_select_policy(executor, tmp_path):
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.phase2 import select_policy

    rnd = random.Random(7)
    rows = _rows(3, [300, 200, 3], 0.7)
    for i, r in enumerate(rows):  # a few copies and shared ids
        r.update(shard=f"in{i % 3}.jsonl", row=i // 3, record=0, content_hash=f"{r['source']}-{rnd.randint(0, 400)}",
                 id=rnd.choice([r["id"], "dup", "dup#2"]))
    table = pa.Table.from_pylist(rows)
    out = tmp_path / "out"
    chunks = []
    for order, shard in enumerate(["in0.jsonl", "in1.jsonl", "in2.jsonl"]):
        part = table.filter(pa.compute.equal(table.column("shard"), shard))
        for half, piece in enumerate((part.slice(0, 40), part.slice(40))):
            key = f"k{order}{half}"
            (out / "_work" / "scored").mkdir(parents=True, exist_ok=True)
            pq.write_table(piece, out / "_work" / "scored" / f"part-{key}.parquet")
            chunks.append({"key": key, "uri": shard, "order": 2 * order + half})
    config = CurateConfig(input=str(tmp_path), output=str(out), proxy="step-ratio", reference_source="s1",
                          drop_top=0.1)
    policy, summary = select_policy(config, chunks, io.Storage(), executor, buckets=3, bucket_limit=2)

    table = pa.concat_tables(pq.read_table(f) for f in sorted((out / "_work" / "scored").glob("*.parquet")))
    fixes = find_duplicates(table, {f"in{i}.jsonl": i for i in range(3)})
    ranked = apply_fixes(table, fixes)
    ranked = ranked.filter(pa.compute.is_null(ranked.column("duplicate_of")))
    old = config.policy().model_copy(update={"reference_steps": reference_steps(ranked, "s1")})
    old = compute_thresholds(ranked, old).model_copy(update={"markup_by_source": markup_by_source(ranked)})
    ref = groupby.read_reference(str(out), io.Storage(), policy.reference_steps_file)
    assert groupby.chunk_reference(ranked, ref) == old.reference_steps
    assert policy.model_copy(update={"reference_steps": old.reference_steps, "reference_steps_file": None}
                             ).model_dump_json() == old.model_dump_json()
    assert summary["passes"] > 2
    assert summary["duplicates"] == fixes.num_rows - fixes.column("duplicate_of").null_count > 0
    assert summary["renamed"] == fixes.num_rows - fixes.column("new_id").null_count > 0
    written = [r for f in sorted((out / "_work" / "dedup").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert _by_key(written) == _by_key(fixes.to_pylist())


def test_online_scorer_loads_the_reference_steps_file(tmp_path):
    import json

    from raypipe.online.scorer import load_run

    ref = pa.table({"problem_id": ["p1", "p2"], "steps": [10.0, 2.5]})
    (tmp_path / "_work" / "reference_steps").mkdir(parents=True)
    pq.write_table(ref, tmp_path / "_work" / "reference_steps" / "part-00000.parquet")
    policy = Policy(proxy="step-ratio", reference_source="ref", reference_steps_file=groupby.REFERENCE_DIR)
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {}, "policy": json.loads(policy.model_dump_json())}))
    run = load_run(str(tmp_path), allow_version_mismatch=True)
    assert run.policy.reference_steps == {"p1": 10.0, "p2": 2.5}
