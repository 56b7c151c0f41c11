"""Pairing: exactly the problems where every source has a verified-correct trajectory are kept (ties, duplicates,
absent problems, problem text that differs only in case and spacing), and the arms' inputs hold nothing else."""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import R1, TRAJECTORIES, need_shared_data  # noqa: E402

from raypipe.experiment.pairing import PairConfig, pair_sources, run_pairing  # noqa: E402


def row(rid: str, problem: str, answer: str, said: str, model: str, extra: str = "") -> dict:
    return {"id": rid, "model": model, "problem": problem, "answer": answer,
            "response": f"<think>\nLet me think{extra}.\n\nPerhaps it is {said}.\n</think>\n\nSo $\\boxed{{{said}}}$."}


P = {k: f"What is {k} + {k}?" for k in range(1, 8)}


def source_a() -> list[dict]:
    return [row("a1", P[1], "2", "2", "ra"),
            row("a1", P[1], "2", "2", "ra"),              # exact duplicate: dropped as such, p1 still correct
            row("a2w", P[2], "4", "5", "ra"),             # p2: a tie of one wrong and one correct trajectory
            row("a2c", P[2], "4", "4", "ra"),
            row("a3", P[3], "6", "7", "ra"),              # p3: wrong only
            row("a4", P[4], "8", "8", "ra"),
            row("a5", P[5], "10", "10", "ra"),            # p5: absent from B
            row("a7", P[7], "14", "14", "ra")]


def source_b() -> list[dict]:
    return [row("b1", "  what IS 1 +  1? ", "2", "2", "rb"),  # the same problem, other case and spacing
            row("b2", P[2], "4", "3", "rb"),              # p2: wrong only in B
            row("b3", P[3], "6", "6", "rb"),
            row("b4", P[4], "8", "8", "rb"),              # p4: two correct (a tie at the top)
            row("b4x", P[4], "8", "8", "rb", extra=" again"),
            row("b6", P[6], "12", "12", "rb"),            # p6: absent from A
            row("b7", P[7], "14", "", "rb")]              # p7: no answer in B


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pair_sources_keeps_the_intersection_of_verified_correct_problems():
    def src(correct, seen):
        return (set(correct), {k: Counter({"correct" if k in correct else "wrong": 1}) for k in seen}, {})

    report = pair_sources({"A": src("abc", "abcd"), "B": src("bcd", "abcde"), "C": src("cb", "bcx")})
    assert report["paired_keys"] == ["b", "c"] and report["overlap"] == 2 and report["union"] == 6
    assert report["excluded_problems"]["a"] == ["B: no verified-correct trajectory (1 wrong)", "C: absent"]
    assert report["excluded_problems"]["x"] == ["A: absent", "B: absent", "C: no verified-correct trajectory (1 wrong)"]
    assert report["exclusion_reasons"]["C: absent"] == 3


@pytest.mark.timeout(300)
def test_pairing_on_a_hand_built_case_with_ties_and_duplicates(ray_local, tmp_path):
    a, b = write(tmp_path / "a.jsonl", source_a()), write(tmp_path / "b.jsonl", source_b())
    cfg = PairConfig(inputs=[a, b], output=str(tmp_path / "paired"), num_cpus=2)
    report = run_pairing(cfg)
    from raypipe.core.schema import problem_id

    expected = {problem_id(P[k]) for k in (1, 4)}  # p2 wrong in B, p3 wrong in A, p5/p6 absent, p7 no answer in B
    assert set(report["paired_keys"]) == expected and report["paired"] == 2
    assert report["sources"]["A"] == {"problems": 6, "problems_with_correct": 5, "records": 8}
    assert report["sources"]["B"]["problems"] == 6 and report["overlap"] == 5  # p1 p2 p3 p4 p7
    why = report["excluded_problems"]
    assert why[problem_id(P[2])] == ["B: no verified-correct trajectory (1 wrong)"]
    assert why[problem_id(P[5])] == ["B: absent"] and why[problem_id(P[6])] == ["A: absent"]
    assert why[problem_id(P[7])] == ["B: no verified-correct trajectory (1 no_answer)"]
    # the arms' inputs: the original rows of the paired problems, byte for byte, and nothing else
    got = {}
    for name in ("A", "B"):
        files = sorted((tmp_path / "paired" / "inputs" / name).iterdir())
        got[name] = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        assert {problem_id(r["problem"]) for r in got[name]} == expected
    assert [r["id"] for r in got["A"]] == ["a1", "a1", "a4"] and [r["id"] for r in got["B"]] == ["b1", "b4", "b4x"]
    assert (tmp_path / "paired" / "inputs" / "A" / "0000-a.jsonl").read_text().splitlines()[2] == json.dumps(
        source_a()[5])


def test_pairing_by_id_on_the_real_r1_and_sky_t1_chains(ray_local, tmp_path):
    need_shared_data()
    cfg = PairConfig(inputs=[str(R1 / "deepseek-r1_aime24.jsonl"),
                             str(TRAJECTORIES / "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl")],
                     output=str(tmp_path / "p"), key="id", answer_from="final-or-thinking", num_cpus=2)
    report = run_pairing(cfg)
    assert report["overlap"] == 30 and report["sources"]["A"]["problems_with_correct"] > 10
    assert 0 < report["paired"] <= report["sources"]["B"]["problems_with_correct"]
    rows = [json.loads(line) for f in (tmp_path / "p" / "inputs" / "A").iterdir() for line in f.open()]
    assert sorted(r["id"] for r in rows) == report["paired_keys"]
