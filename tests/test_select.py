"""Selection: exact per-source counts, ranking, ties, baselines, and single-row decisions equal to the batch's."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raypipe.core.policy import Policy, decide, n_to_drop
from raypipe.curate.exact_thresholds import compute_thresholds


def _table(n_per_source=(37, 120, 5), seed=0, ties=False):
    rng = np.random.default_rng(seed)
    rows = []
    for s, n in enumerate(n_per_source):
        for i in range(n):
            ratio = float(rng.integers(0, 5) / 10) if ties else float(rng.random())
            rows.append({"source": f"s{s}", "id": f"{s}-{i}", "problem_id": f"p{i % 7}",
                         "verdict": "correct" if rng.random() < 0.8 else "wrong", "branch_ratio": ratio,
                         "n_steps": int(rng.integers(1, 50)), "n_tokens": int(rng.integers(100, 10000))})
    return pa.Table.from_pylist(rows)


def test_rounding_rule():
    assert [n_to_drop(0.1, n) for n in (0, 4, 5, 14, 15, 25, 220)] == [0, 0, 1, 1, 2, 3, 22]


@pytest.mark.parametrize("rule", ["top", "random", "longest"])
@pytest.mark.parametrize("ties", [False, True])
def test_exact_count_per_source_and_ranking(rule, ties):
    t = _table(ties=ties)
    policy = compute_thresholds(t, Policy(rule=rule, drop_top=0.1, seed=3))
    out = decide(t, policy)
    rows = t.to_pylist()
    for src in ("s0", "s1", "s2"):
        correct = [i for i, r in enumerate(rows) if r["source"] == src and r["verdict"] == "correct"]
        dropped = [i for i in correct if out["decision"][i].as_py() == "drop"]
        assert len(dropped) == n_to_drop(0.1, len(correct))
        if rule == "top" and dropped:
            kept = [i for i in correct if i not in dropped]
            assert min(rows[i]["branch_ratio"] for i in dropped) >= max(rows[i]["branch_ratio"] for i in kept)
        if rule == "longest" and dropped:
            kept = [i for i in correct if i not in dropped]
            assert min(rows[i]["n_tokens"] for i in dropped) >= max(rows[i]["n_tokens"] for i in kept)
    wrong = [i for i, r in enumerate(rows) if r["verdict"] != "correct"]
    assert all(out["decision"][i].as_py() == "drop" and out["reason"][i].as_py() == "verdict:wrong" for i in wrong)


def test_random_rule_depends_on_seed_only():
    t = _table()
    a = decide(t, compute_thresholds(t, Policy(rule="random", seed=1)))["decision"].to_pylist()
    b = decide(t, compute_thresholds(t, Policy(rule="random", seed=1)))["decision"].to_pylist()
    c = decide(t, compute_thresholds(t, Policy(rule="random", seed=2)))["decision"].to_pylist()
    assert a == b and a != c


def test_keep_all_and_keep_incorrect():
    t = _table()
    out = decide(t, compute_thresholds(t, Policy(rule="keep-all", keep_incorrect=True)))
    assert set(out["decision"].to_pylist()) == {"keep"}


def test_single_row_decisions_equal_the_batch():
    t = _table(ties=True)
    policy = compute_thresholds(t, Policy(drop_top=0.2))
    policy = Policy.model_validate_json(policy.model_dump_json())  # as the online scorer loads it
    batch = decide(t, policy)["decision"].to_pylist()
    single = [decide(t.slice(i, 1), policy)["decision"][0].as_py() for i in range(t.num_rows)]
    assert batch == single


def test_unknown_source_uses_the_default_threshold():
    t = _table()
    policy = compute_thresholds(t, Policy())
    row = pa.Table.from_pylist([{"source": "new", "id": "x", "problem_id": "p", "verdict": "correct",
                                 "branch_ratio": 0.999, "n_steps": 3, "n_tokens": 5}])
    out = decide(row, policy)
    assert out["decision"][0].as_py() == "drop" and out["threshold"][0].as_py() == policy.default_threshold


def test_step_ratio_proxy():
    t = pa.Table.from_pylist([
        {"source": "ref", "id": "a", "problem_id": "p1", "verdict": "correct", "branch_ratio": 0.1, "n_steps": 10, "n_tokens": 1},
        {"source": "r1", "id": "a", "problem_id": "p1", "verdict": "correct", "branch_ratio": 0.1, "n_steps": 30, "n_tokens": 1},
        {"source": "r1", "id": "b", "problem_id": "p2", "verdict": "correct", "branch_ratio": 0.1, "n_steps": 5, "n_tokens": 1},
    ])
    policy = Policy(proxy="step-ratio", reference_source="ref", reference_steps={"p1": 10.0})
    out = decide(t, policy)
    assert out["step_ratio"].to_pylist() == [1.0, 3.0, None]
    assert out["branch_score"].to_pylist() == [1.0, 3.0, None]


def test_markers_per_1k_proxy_drops_the_densest_rows_per_source():
    """The markers-per-1k proxy: one class in raypipe.core.proxies, selected by name, ranked on its own column."""
    rng = np.random.default_rng(5)
    t = _table(ties=True)
    t = t.append_column("markers_per_1k_tokens", pa.array(rng.integers(0, 6, t.num_rows).astype(float)))
    policy = compute_thresholds(t, Policy(rule="top", proxy="markers-per-1k", drop_top=0.2))
    out = decide(t, policy)
    rows = t.to_pylist()
    assert out["branch_score"].to_pylist() == [r["markers_per_1k_tokens"] for r in rows]
    for src in ("s0", "s1", "s2"):
        correct = [i for i, r in enumerate(rows) if r["source"] == src and r["verdict"] == "correct"]
        dropped = [i for i in correct if out["decision"][i].as_py() == "drop"]
        assert len(dropped) == n_to_drop(0.2, len(correct))
        kept = [i for i in correct if i not in dropped]
        if dropped and kept:
            assert min(rows[i]["markers_per_1k_tokens"] for i in dropped) >= max(
                rows[i]["markers_per_1k_tokens"] for i in kept)
    assert policy.columns() == ["source", "id", "verdict", "markers_per_1k_tokens"]
