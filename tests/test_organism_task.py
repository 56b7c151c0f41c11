"""The model organism's task family (raypipe make-task): seeded files, two teachers whose traces verify at the
stated rates and branch as designed, splits registered as benchmarks, and a student whose EOS is not its
end-of-turn token."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from statistics import median

import pytest

from raypipe.core.schema import records_table
from raypipe.core.scoring import Scorer, ScoringConfig
from raypipe.organism.config import MakeTaskConfig
from raypipe.organism.make import make_task

SMALL = {"train_problems": 600, "test_problems": 40, "hard_problems": 40}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("task")
    make_task(MakeTaskConfig(output=str(out), **SMALL))
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_files(task, tmp_path):
    again = tmp_path / "again"
    make_task(MakeTaskConfig(output=str(again), **SMALL))
    assert digests(again) == digests(task)
    other = tmp_path / "other"
    make_task(MakeTaskConfig(output=str(other), seed=1, **SMALL))
    assert digests(other)["teachers/divergent.jsonl"] != digests(task)["teachers/divergent.jsonl"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scored(task: Path, teacher: str) -> list[dict]:
    from raypipe.core.formats import normalize_row

    records = [normalize_row(r, "flat", "teacher", teacher, i)
               for i, r in enumerate(rows(task / "teachers" / f"{teacher}.jsonl"))]
    scorer = Scorer(ScoringConfig(verify_timeout_s=30)).setup()
    try:
        return scorer.score(records_table(records)).to_pylist()
    finally:
        scorer.close()


def test_teachers_verify_at_the_stated_rates_and_branch_as_designed(task):
    summary = json.loads((task / "task.json").read_text())
    div, conv = scored(task, "divergent"), scored(task, "convergent")
    for teacher, traces in (("divergent", div), ("convergent", conv)):
        stated = summary["teachers"][teacher]
        verdicts = [t["verdict"] for t in traces]
        # the curation verifier agrees with the generator on every trace: cut-offs have no answer, slips are wrong
        assert verdicts.count("no_answer") == stated["cut_off"] > 0
        assert verdicts.count("wrong") == stated["wrong"] > 0
        assert verdicts.count("correct") == round(stated["correct_rate"] * len(traces))
        assert 0.75 < stated["correct_rate"] < 0.95
    conv_ratio = [t["branch_ratio"] for t in conv]
    div_ratio = sorted(t["branch_ratio"] for t in div)
    assert max(conv_ratio) == 0.0, "the convergent teacher never opens an alternative"
    assert median(div_ratio) > 0 and sum(div_ratio) / len(div_ratio) > 0.1
    top = div_ratio[int(0.9 * len(div_ratio)):]
    assert min(top) > 2 * median(div_ratio), "a heavy tail: the top 10 % branch far more than the median trace"
    markup = {t["markup"] for t in div if t["verdict"] == "correct"} | {t["markup"] for t in conv
                                                                          if t["verdict"] == "correct"}
    assert markup == {"think", "harmony"}


def test_splits_are_registered_benchmarks_and_disjoint_from_training(task):
    from raypipe.eval.benchmarks import load

    train = {r["problem"] for r in rows(task / "teachers" / "convergent.jsonl")}
    test = load("organism", str(task / "benchmarks"))
    hard = load("organism_hard", str(task / "benchmarks"))
    assert len(test.problems) == 40 and len(hard.problems) == 40
    assert not train & {p.problem for p in test.problems + hard.problems}
    ops = [r["n_ops"] for r in rows(task / "benchmarks" / "organism_hard.jsonl")]
    assert min(ops) >= max(r["n_ops"] for r in rows(task / "benchmarks" / "organism.jsonl")) - 0


def test_student_eos_is_not_its_end_of_turn_and_numbers_are_single_tokens(task):
    from raypipe.eval.prompting import stop_token_ids
    from raypipe.tiny import load_tokenizer

    tok = load_tokenizer(str(task / "student"))
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id != end_of_turn
    generation = json.loads((task / "student" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tok.eos_token_id  # as in a base checkpoint
    assert stop_token_ids(tok, generation["eos_token_id"]) == [tok.eos_token_id, end_of_turn]
    for n in (0, 7, 42, 50):
        assert len(tok(f" {n}", add_special_tokens=False)["input_ids"]) == 1
        assert len(tok(str(n), add_special_tokens=False)["input_ids"]) == 1
