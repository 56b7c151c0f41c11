"""Scoring fixed outputs: the 600 real Sky-T1 trajectories as a model's outputs on math500, aime24 and amc23.

The metrics must equal those computed directly from the verifier's verdicts, and the branch statistics come out.
"""
from __future__ import annotations

import json

import pytest

from raypipe.eval.config import EvalConfig
from raypipe.eval.runner import run_eval
from raypipe.core.lexicon import get_lexicon
from raypipe.core.schema import split_reasoning
from raypipe.core.structure import measure_python
from raypipe.core.verify import Verifier, extract_answer
from tests.conftest import BENCHMARKS, TRAJECTORIES

pytestmark = pytest.mark.timeout(400)

FILES = {
    "math500": ["skyt1_math-correct-5K-27B_math500.jsonl"],
    "amc23": ["skyt1_math-correct-5K-14B_amc23.jsonl"],
    "aime24": ["skyt1_math-correct-5K-14B_aime24.jsonl", "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl"],
}


def direct(rows: list[dict], verifier: Verifier) -> dict:
    """avg accuracy and mean branch_ratio straight from the verifier and the structure module."""
    splits = [split_reasoning(r["response"]) for r in rows]
    grades = verifier.grade_many([(extract_answer(s.final), r["answer"]) for s, r in zip(splits, rows)])
    ratios = [measure_python(s.thinking, get_lexicon("paper"))["branch_ratio"] for s in splits]
    ratios = [x for x in ratios if x is not None]
    return {"avg": sum(g.verdict == "correct" for g in grades) / len(rows), "branch_ratio": sum(ratios) / len(ratios),
            "unfinished": sum(not s.complete for s in splits) / len(rows)}


def by_id_correct(sample: dict, rows: list[dict]) -> bool:
    """The harness's grade of the stored response this sample replayed."""
    return next(r["correct"] in (True, "True") for r in rows if r["response"] == sample["response"])


@pytest.mark.parametrize("n,names", [(1, ["math500", "amc23"]), (2, ["aime24"])])
def test_fixed_outputs_metrics_equal_direct_verdicts(shared_data, tmp_path, n, names):
    responses = [str(TRAJECTORIES / f) for name in names for f in FILES[name]]
    config = EvalConfig(model="sky-t1", backend="replay", responses=responses, benchmarks=names, n=n,
                        data_dir=str(BENCHMARKS), output=str(tmp_path / "out"), verify_workers=2)
    results = run_eval(config, log=lambda *_: None)
    verifier = Verifier(workers=2, timeout_s=5.0).setup()
    try:
        for name in names:
            rows = [json.loads(line) for f in FILES[name] for line in open(TRAJECTORIES / f)]
            m = results["metrics"][name]
            d = direct(rows, verifier)
            assert m["samples"] == len(rows) == m["problems"] * n
            assert m["generation_errors"] == 0
            assert m["avg@n"] == pytest.approx(d["avg"])
            assert m["pass@k"]["1"] == pytest.approx(d["avg"])
            assert m["branch"]["mean_branch_ratio"] == pytest.approx(d["branch_ratio"])
            assert m["branch"]["unfinished_rate"] == pytest.approx(d["unfinished"])
            assert m["branch"]["mean_steps"] > 10
            # Where a boxed answer was found, the verdicts agree with the Qwen2.5-Math harness's grades (an
            # independent grader). The harness also takes the last number of unboxed outputs; the verifier
            # says no_answer there, so avg@n is lower than the harness's accuracy on math500.
            graded = [(s["verdict"] == "correct", by_id_correct(s, rows)) for s in results["samples"]
                      if s["benchmark"] == name and s["verdict"] in ("correct", "wrong")]
            assert sum(a == b for a, b in graded) / len(graded) > 0.95
            if n == 2:
                assert m["pass@k"]["2"] >= m["avg@n"]
    finally:
        verifier.close()
    assert len(results["samples"]) == sum(results["metrics"][x]["samples"] for x in names)
    assert all(s["verdict"] for s in results["samples"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and all(f"<td>{t}</td>" in html for t in ("Average",))
