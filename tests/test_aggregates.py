"""The manifest's and the report's aggregates: a table split into chunks merges to the aggregate of the whole."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from raypipe.curate import aggregates as ag
from raypipe.curate.aggregates import aggregate, merge, quantile

SOURCES = ("alpha", "beta", "gamma")
VERDICTS = ("correct", "correct", "wrong", "no_answer", "unverified")


def decided_table(n: int, seed: int = 0, distinct: int = 40) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        steps = rng.choice([0, 1, 2, 3, 5, 8, 13, 40])
        ratio = None if steps == 0 else rng.randrange(distinct + 1) / distinct
        rows.append({
            "source": rng.choice(SOURCES), "id": f"r{i}", "verdict": rng.choice(VERDICTS),
            "decision": rng.choice(["keep", "drop"]), "reason": "x", "branch_score": ratio,
            "branch_ratio": ratio, "n_steps": steps, "n_tokens": rng.randrange(10, 30_000),
            "final_chars": rng.choice([0, 10, 200]), "thinking_chars": rng.randrange(0, 9000),
            "markup": "think", "answer_source": rng.choice([None, "final:boxed", "thinking:boxed", "final:phrase"]),
            "unconsumed_text": rng.choice([None, None, "note", "note,extra"]),
            "duplicate_of": rng.choice([None] * 9 + ["r0"]), "input_id": rng.choice([None] * 9 + ["orig"]),
        })
    return pa.Table.from_pylist(rows)


def random_chunks(table: pa.Table, rng: random.Random) -> list[pa.Table]:
    order = list(range(table.num_rows))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, table.num_rows), rng.randrange(1, 12)))
    return [table.take(order[a:b]) for a, b in zip([0] + cuts, cuts + [table.num_rows])]


def without_chunks(agg: dict) -> dict:
    return {k: v for k, v in agg.items() if k != "chunks"}


@pytest.mark.parametrize("distinct", [40, 5000])  # exact distributions, then binned ones
def test_chunks_merge_to_the_whole(distinct, monkeypatch):
    monkeypatch.setattr(ag, "SAMPLE_PER_SOURCE", 50)
    monkeypatch.setattr(ag, "EXACT_VALUES", 100)  # a source's groups hold ~100-400 distinct values at 5000
    table = decided_table(3000, distinct=distinct)
    whole = merge([aggregate(table)])
    rng = random.Random(distinct)
    for trial in range(3):
        parts = [aggregate(c, f"c{i}") for i, c in enumerate(random_chunks(table, rng))]
        parts = [json.loads(json.dumps(p)) for p in parts]  # what travels between the workers and the driver
        rng.shuffle(parts)
        left = merge(parts)
        tree = merge([merge(parts[: len(parts) // 2]), merge(parts[len(parts) // 2:])])
        assert without_chunks(left) == without_chunks(tree) == without_chunks(whole)
        assert sum(c["records"] for c in left["chunks"].values()) == table.num_rows
    exact = all(ag.is_exact(d) for a in whole["sources"].values() for d in a["branch_ratio"].values())
    assert exact == (distinct == 40)


def test_counts_match_the_records():
    table = decided_table(500)
    m = merge([aggregate(c) for c in random_chunks(table, random.Random(1))])
    rows = table.to_pylist()
    for s in SOURCES:
        mine = [r for r in rows if r["source"] == s]
        a = m["sources"][s]
        assert a["records"] == len(mine)
        assert a["decisions"].get("keep", 0) == sum(r["decision"] == "keep" for r in mine)
        assert a["empty_thinking"] == sum(not r["n_steps"] for r in mine)
        assert a["empty_final"] == sum(not r["final_chars"] for r in mine)
        assert a["duplicates"] == sum(r["duplicate_of"] is not None for r in mine)
        assert a["answer_source"].get("none", 0) == sum(r["answer_source"] is None for r in mine)
        assert a["unconsumed_text"]["note"] == sum("note" in (r["unconsumed_text"] or "") for r in mine)


def test_exact_quantiles_are_numpys():
    table = decided_table(2000, seed=3)
    m = merge([aggregate(c) for c in random_chunks(table, random.Random(2))])
    for s in SOURCES:
        values = [r["branch_ratio"] for r in table.to_pylist() if r["source"] == s and r["branch_ratio"] is not None
                  and r["verdict"] != "unverified"]
        d = ag.branch_ratios(m["sources"][s], ("correct", "other"))
        assert ag.is_exact(d)
        for q in (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0):
            assert quantile(d, q) == float(np.quantile(values, q))


def test_binned_quantiles_are_within_a_bin():
    values = np.random.default_rng(0).beta(2, 5, 20_000)
    d = ag._dist(dict(zip(*np.unique(values, return_counts=True))))
    assert not ag.is_exact(d)
    for q in (0.1, 0.5, 0.9, 0.95):
        assert abs(quantile(d, q) - np.quantile(values, q)) <= 1 / ag.FINE_BINS
    assert quantile(d, 1.0) == values.max()


def test_the_sample_is_bounded_and_deterministic(monkeypatch):
    monkeypatch.setattr(ag, "SAMPLE_PER_SOURCE", 25)
    table = decided_table(2000, seed=5)
    rng = random.Random(9)
    samples = []
    for _ in range(3):
        parts = [aggregate(c) for c in random_chunks(table, rng)]
        rng.shuffle(parts)
        samples.append({s: a["sample"] for s, a in merge(parts)["sources"].items()})
    assert samples[0] == samples[1] == samples[2]
    for s, rows in samples[0].items():
        keys = sorted(ag.sample_key(s, r["id"]) for r in table.to_pylist() if r["source"] == s)
        assert [r[0] for r in rows] == keys[:25]


def test_a_chunk_that_does_not_balance_is_named():
    table = decided_table(100)
    merged = merge([aggregate(table.slice(0, 60), "a"), aggregate(table.slice(60), "b")])
    stats = [{"key": "a", "uri": "in/a", "records": 62, "rejected": 2}, {"key": "b", "uri": "in/b", "records": 41,
                                                                         "rejected": 0}]
    assert [f["chunk"] for f in ag.check_balance(stats, merged)] == ["b"]


def test_an_empty_chunk():
    empty = decided_table(10).slice(0, 0)
    m = merge([aggregate(empty, "e"), aggregate(decided_table(10), "f")])
    assert m["chunks"]["e"] == {"records": 0, "kept": 0, "dropped": 0}
    assert sum(a["records"] for a in m["sources"].values()) == 10


def test_manifest_and_report_from_the_aggregate(tmp_path, monkeypatch):
    from raypipe.core.io import Storage
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.report import build_manifest, write_report

    monkeypatch.setattr(ag, "EXACT_VALUES", 20)  # beta's correct rows: binned, so approximate quantiles
    table = decided_table(400, distinct=200)
    merged = merge([aggregate(table.slice(0, 150), "a"), aggregate(table.slice(150), "b")])
    stats = [{"uri": "in/a", "key": "a", "rows": 150, "records": 150, "rejected": 0, "records_per_row": {"1": 150}},
             {"uri": "in/b", "key": "b", "rows": 251, "records": 251, "rejected": 0, "records_per_row": {"1": 251}}]
    config = CurateConfig(input="in", output=str(tmp_path))
    m = build_manifest(config, ["in/a", "in/b"], stats, merged, None, config.policy(), 1.0)
    assert not m["balanced"] and [c["chunk"] for c in m["unbalanced_chunks"]] == ["b"]
    assert m["counts"]["kept"] + m["counts"]["dropped"] == 400
    assert sum(v["records"] for v in m["by_source"].values()) == 400
    assert m["by_source"]["beta"]["quantiles"]["branch_ratio"].startswith("approximate")
    json.dumps(m)
    write_report(m, merged, config.policy(), str(tmp_path / "report.html"), Storage())
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img") == 3 and "Counts do not balance in:</b> b" in html and "are approximate" in html
