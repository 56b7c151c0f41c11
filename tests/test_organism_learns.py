"""The loop learns: the model organism through the real commands (raypipe experiment: make-task, pair, curate,
budget, Ray Train + DeepSpeed SFT from scratch, eval with the hf backend), two seeds of a short run. A trained student
beats the untrained one on every seed, beyond what chance over the problems allows: the end-to-end check of loss
masking, packing, the chat template, the shared prompt, the checkpoint export, stopping, decoding and extraction."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, raypipe_cli

# A smaller task than the shipped configs' (shorter chains over smaller numbers), so that 200 steps teach it: 21 and
# 27 % on the two seeds against 0 % untrained (150 steps: 13 and 16 %; 300 steps: 89 and 95 %, a minute more).
TASK = {"seed": 0, "train_problems": 2000, "test_problems": 100, "hard_problems": 60,
        "difficulty": {"max_ops": 3, "max_value": 20, "max_start": 12, "max_add": 5},
        "hard": {"min_ops": 3, "max_ops": 3, "max_value": 20, "min_start": 8, "max_start": 16, "max_add": 5}}


@pytest.fixture(scope="module")
def study(tmp_path_factory, spawn) -> Path:
    out = tmp_path_factory.mktemp("organism")
    cfg = yaml.safe_load((ROOT / "cluster" / "experiments" / "organism-quick.yaml").read_text())
    task = out / "task"
    cfg.update(output=str(out / "study"), task={**TASK, "output": str(task)}, model=str(task / "student"),
               source_a=str(task / "teachers" / "divergent.jsonl"), source_b=str(task / "teachers" / "convergent.jsonl"),
               seeds=[0, 1])
    cfg["train"].update(max_steps=200, epochs=10)
    cfg["eval"].update(data_dir=str(task / "benchmarks"), max_tokens=200)
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = spawn.run([*raypipe_cli(), "experiment", str(path)], capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return out / "study"


@pytest.mark.slow
@pytest.mark.study
@pytest.mark.timeout(1000)
def test_a_short_run_lifts_the_student_beyond_chance_on_every_seed(study):
    from raypipe.experiment.stats import paired_test
    from raypipe.experiment.table import problem_accuracy

    table = json.loads((study / "results.json").read_text())
    rows = {r["arm"]: r for r in table["rows"]}
    for arm in ("B-all", "base"):
        for bench in ("organism", "organism_hard"):
            cell = rows[arm]["benchmarks"][bench]
            assert set(cell["seeds"]) == {"0", "1"} and len(cell["ci95"]) == 2 and cell["mean"] is not None
    base, trained = rows["base"]["benchmarks"]["organism"], rows["B-all"]["benchmarks"]["organism"]
    assert base["mean"] <= 0.05
    # every seed above the untrained student's interval over problems, by at least 10 points
    assert min(trained["seeds"].values()) >= base["ci95_problems"][1] + 0.10
    per_seed = {arm: {s: problem_accuracy(json.loads((study / "arms" / arm / f"seed-{s}" / "eval" / "results.json")
                                                     .read_text()), "organism") for s in (0, 1)}
                for arm in ("B-all", "base")}
    test = paired_test(per_seed["B-all"], per_seed["base"])
    assert test["difference"] > 0.1 and test["p_value"] < 1e-6
    summary = json.loads((study / "arms" / "B-all" / "seed-0" / "sft" / "train_summary.json").read_text())
    assert summary["final_loss"] < summary["first_loss"] / 5


@pytest.mark.slow
@pytest.mark.study
def test_the_trained_student_stops_at_its_end_of_turn_and_a_cut_reply_keeps_its_markup(study):
    from raypipe.eval.hf_engine import HFEngine
    from raypipe.eval.prompting import messages

    results = json.loads((study / "arms" / "B-all" / "seed-0" / "eval" / "results.json").read_text())
    replies = [s for s in results["samples"] if s["benchmark"] == "organism"]
    assert sum(s["finish_reason"] == "stop" for s in replies) >= 0.95 * len(replies)
    assert all(s["response"].startswith("<think>") for s in replies if s["finish_reason"] == "stop")
    engine = HFEngine(str(study / "arms" / "B-all" / "seed-0" / "sft" / "model")).setup()
    problem = replies[0]["problem"]
    cut = engine.generate([engine.render(messages(problem, "v1-raw"))], 6, 0.0, 1.0)[0]
    assert cut["finish_reason"] == "length" and cut["text"].startswith("<think>")
