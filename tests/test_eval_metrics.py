"""Eval metrics: pass@k against brute force, avg@n and maj@n on hand-built cases, the registry and its errors."""
from __future__ import annotations

import itertools
import json
import random
from math import comb

import pytest

from raypipe.eval import benchmarks as bm
from raypipe.eval import metrics as mx
from tests.conftest import BENCHMARKS


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(outcomes)), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_on_random_cases():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 10)
        outcomes = [rng.random() < rng.random() for _ in range(n)]
        k = rng.randint(1, n)
        assert mx.pass_at_k(n, sum(outcomes), k) == pytest.approx(brute_pass_at_k(outcomes, k), abs=1e-12)
    assert mx.pass_at_k(64, 1, 1) == pytest.approx(1 / 64)
    assert mx.pass_at_k(64, 2, 32) == pytest.approx(1 - comb(62, 32) / comb(64, 32))
    with pytest.raises(ValueError):
        mx.pass_at_k(4, 1, 5)


def S(pid, verdict, answer):
    return {"problem_id": pid, "verdict": verdict, "answer_extracted": answer}


def test_avg_and_maj_on_hand_built_cases():
    samples = [
        # p1: 3 of 4 correct; majority "5" is correct
        S("p1", "correct", "5"), S("p1", "correct", "5"), S("p1", "wrong", "6"), S("p1", "correct", "5.0"),
        # p2: 1 of 4 correct; majority "7" (x2) is wrong
        S("p2", "wrong", "7"), S("p2", "correct", "8"), S("p2", "wrong", "7"), S("p2", "no_answer", None),
        # p3: no answers at all: maj counts it wrong
        S("p3", "no_answer", None), S("p3", "no_answer", None), S("p3", "timeout", "x"), S("p3", "no_answer", None),
    ]
    m = mx.benchmark_metrics(samples, 4)
    assert m["avg@n"] == pytest.approx(4 / 12)
    assert m["maj@n"] == pytest.approx(1 / 3)
    assert m["pass@k"]["1"] == pytest.approx(4 / 12)
    assert m["pass@k"]["4"] == pytest.approx(2 / 3)
    assert sorted(m["pass@k"]) == ["1", "2", "4"]
    assert m["verdicts"] == {"correct": 4, "no_answer": 4, "timeout": 1, "wrong": 3}
    # A tie goes to the answer seen first; spacing and \left/\right do not split votes.
    assert mx.majority_correct([S("q", "wrong", "1"), S("q", "correct", "2"), S("q", "correct", "2 "),
                                S("q", "wrong", "1")]) is False
    assert mx.majority_correct([S("q", "correct", r"\left(1,2\right)"), S("q", "wrong", "3"),
                                S("q", "correct", "(1, 2)")]) is True
    with pytest.raises(ValueError, match="samples"):
        mx.benchmark_metrics(samples[:-1], 4)
    o = mx.overall({"a": m, "b": {**m, "avg@n": 1.0}})
    assert o["avg@n"] == pytest.approx((4 / 12 + 1.0) / 2)


EXPECTED = {"math500": 500, "aime24": 30, "aime25": 30, "hmmt25": 30, "amc23": 40, "olympiadbench": 675,
            "minerva": 272, "olymmath_hard": 100, "olymmath_easy": 100}


def test_registry_loads_every_shipped_benchmark(shared_data):
    for name, size in EXPECTED.items():
        b = bm.load(name, str(BENCHMARKS))
        assert len(b.problems) == size == b.spec.size
        assert all(p.problem and p.answer for p in b.problems)
        assert len({p.id for p in b.problems}) == size
        assert len(b.sha256) == 64
    # beyond_aime has no local file here; the organism splits are written by `raypipe make-task`
    assert set(bm.REGISTRY) == set(EXPECTED) | {"beyond_aime", "organism", "organism_hard"}
    assert bm.get("beyond_aime").hf_id == "ByteDance-Seed/BeyondAIME"


def test_registry_errors_are_clear(shared_data, tmp_path, monkeypatch):
    with pytest.raises(bm.BenchmarkError, match="unknown benchmark 'aime26'.*known: math500"):
        bm.parse_names("aime24,aime26")
    with pytest.raises(bm.BenchmarkError, match=r"beyond_aime: no local file.*beyond_aime\.jsonl.*--benchmark-file"):
        bm.load("beyond_aime", str(BENCHMARKS))
    monkeypatch.delenv(bm.DATA_DIR_ENV, raising=False)
    with pytest.raises(bm.BenchmarkError, match="RAYPIPE_DATA_DIR"):
        bm.load("aime24")
    monkeypatch.setenv(bm.DATA_DIR_ENV, str(BENCHMARKS))
    assert len(bm.load("aime24").problems) == 30
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_text": "x", "solution": "1"}) + "\n")
    with pytest.raises(bm.BenchmarkError, match="lacks the fields of aime25.*question_text"):
        bm.load("aime25", file=str(bad))
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps({"problem": f"p{i}", "answer": i}) + "\n" for i in range(7)))
    with pytest.raises(bm.BenchmarkError, match="holds 7 problems, but BeyondAIME has 100"):
        bm.load("beyond_aime", file=str(short))
    assert len(bm.load("beyond_aime", file=str(short), check_size=False).problems) == 7
    with pytest.raises(bm.BenchmarkError, match="file not found"):
        bm.load("aime24", file=str(tmp_path / "none.jsonl"))


def test_benchmark_file_from_s3(shared_data, s3_bucket):
    import boto3

    endpoint, bucket = s3_bucket
    boto3.client("s3", endpoint_url=endpoint).put_object(
        Bucket=bucket, Key="bench/aime24.jsonl", Body=(BENCHMARKS / "aime24.jsonl").read_bytes())
    from raypipe.core.io import Storage

    b = bm.load("aime24", file=f"s3://{bucket}/bench/aime24.jsonl", storage=Storage(s3_endpoint=endpoint))
    local = bm.load("aime24", str(BENCHMARKS))
    assert [p.answer for p in b.problems] == [p.answer for p in local.problems] and b.sha256 == local.sha256
