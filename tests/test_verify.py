"""Verification: answer extraction, verdicts, the wall-clock bound, and agreement with the reference harness."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from raypipe.core.verify import CPU_GRACE_S, Verifier, extract_answer
from tests.conftest import TRAJECTORIES, need_shared_data


@pytest.fixture(scope="module")
def verifier():
    v = Verifier(workers=1, timeout_s=3.0).setup()
    yield v
    v.close()


@pytest.mark.parametrize("final, expected", [
    (r"so the answer is \boxed{3} and then \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\left(3, \frac{\pi}{2}\right)}", r"\left(3, \frac{\pi}{2}\right)"),
    (r"\fbox{7}", "7"),
    ("The final answer is $42$.", "42"),
    ("**Answer:** 17", "17"),
    ("Answer: x = 5", "x = 5"),
    ("no answer given here", None),
    ("", None),
    (r"\boxed{unclosed", None),
])
def test_extract_answer(final, expected):
    assert extract_answer(final) == expected


def test_verdicts(verifier):
    pairs = [
        (r"\frac{3\sqrt3}{4}", r"\frac{3\sqrt{3}}{4}"),
        ("204", "204"),
        ("0.5", r"\frac12"),
        ("205", "204"),
        (None, "5"),
        ("7", ""),
        ("7", r"\text{}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    ]
    got = [g.verdict for g in verifier.grade_many(pairs)]
    assert got == ["correct", "correct", "correct", "wrong", "no_answer", "unverified", "unparseable_reference",
                   "correct"]


def test_hostile_answers_are_bounded_and_never_evaluated(verifier, tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    pairs = [
        ("9^{9^{9^{9}}}", "3"),
        ("{" * 10000 + "1" + "}" * 10000, "1"),
        (code, "1"),
        ("x" * 100_000, "1"),
    ]
    t0 = time.perf_counter()
    grades = verifier.grade_many(pairs)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0 * len(pairs) + 5, elapsed
    assert grades[0].verdict in ("timeout", "error", "wrong")
    assert grades[1].verdict == "error" and "limit" in grades[1].detail
    assert grades[2].verdict in ("wrong", "error")
    assert grades[3].verdict == "error"
    assert not marker.exists()
    # the pool still works after a worker was killed
    assert verifier.grade_many([("2", "2.0"), (r"\sqrt{4}", "2")])[1].verdict == "correct"


def _categorise(row: dict, ours: str, extracted: str | None, harness_ok: bool) -> str:
    """Why our verdict differs from the harness's 'correct' grade (or 'uncategorised')."""
    response, meta = row["response"], row
    complete = str(meta.get("thought_complete")) == "True"
    solution_closed = "<|end_of_solution|>" in response or "<|begin_of_solution|>" not in response
    if harness_ok and ours == "no_answer" and (not complete or not solution_closed):
        return "truncated -> no_answer"
    ref_h = str(meta.get("answer_harness", meta["answer"])).replace(" ", "")
    if ref_h != str(meta["answer"]).replace(" ", ""):
        return "reference extraction error"
    pred = str(meta.get("pred", "")).replace(" ", "")
    if extracted is not None and pred and pred != extracted.replace(" ", "") and ours in ("correct", "wrong"):
        return "reference extraction error"
    if ours == "no_answer" and complete:
        return "verifier miss"
    if extracted is not None and pred == extracted.replace(" ", ""):
        return "verifier miss"
    return "uncategorised"


def test_agreement_with_reference_harness(verifier, tmp_path):
    need_shared_data()
    from raypipe.core.io import Storage
    from raypipe.core.scoring import Scorer, ScoringConfig
    from raypipe.curate.shard import load_shard

    scorer = Scorer(ScoringConfig())
    scorer.verifier = verifier
    disagreements, with_final, agree, truncated_credited, from_display = [], 0, 0, 0, {}
    for path in sorted(TRAJECTORIES.glob("*.jsonl")):
        raw = {json.loads(line)["id"]: json.loads(line) for line in path.open()}
        records, rejects, _ = load_shard(str(path), Storage())
        assert rejects.num_rows == 0
        scored = scorer.score(records).to_pylist()
        for r in scored:
            src = raw[r["id"]]
            if r["answer_source"] == "final:display-equation":
                from_display[r["id"]] = r["verdict"]
            harness_ok = str(src["correct"]) == "True"
            ours = r["verdict"]
            if not r["thought_complete"]:
                assert ours == "no_answer", (r["id"], ours)  # never graded from inside the thinking
                truncated_credited += harness_ok
            else:
                with_final += 1
                agree += (ours == "correct") == harness_ok
            if (ours == "correct") != harness_ok:
                cat = _categorise(src, ours, r["answer_extracted"], harness_ok)
                disagreements.append({"file": path.name, "id": r["id"], "harness_correct": harness_ok,
                                      "verdict": ours, "extracted": r["answer_extracted"],
                                      "harness_pred": src.get("pred"), "reference": src["answer"], "category": cat})
    out = tmp_path / "disagreements.jsonl"
    out.write_text("".join(json.dumps(d) + "\n" for d in disagreements))
    print(f"\n{len(disagreements)} disagreements written to {out}: {Counter(d['category'] for d in disagreements)}")
    print(f"agreement on rows with a final part: {agree}/{with_final} = {agree / with_final:.3f}")
    assert 100 <= truncated_credited <= 140, truncated_credited  # the harness credits ~120 cut-off outputs
    assert agree / with_final >= 0.97
    assert not [d for d in disagreements if d["category"] == "uncategorised"], disagreements
    # The concluding display equation ($$\tan A = 2$$; "the final result is: \[ … = \frac{1}{8} \]") grades
    # exactly these two finished solutions, both right, and no other row: every other verdict is as before it.
    assert from_display == {"math500_45": "correct", "math500_416": "correct"}, from_display


def test_a_verifier_worker_exits_when_its_parent_dies_mid_comparison(spawn):
    """A killed actor or replica must not leave a worker computing a hostile expression for ever."""
    import os
    import signal
    import subprocess
    import sys

    script = ("import sys\nfrom raypipe.core.verify import Verifier\nv = Verifier(timeout_s=2).setup()\n"
              "print(v._workers[0].proc.pid, flush=True)\nv.grade_many([('9^{9^{9^{9^{9^{9}}}}}', '7')])\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    time.sleep(1.0)  # the comparison is under way
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.time() + 2 + CPU_GRACE_S + 20  # the bound, the grace, and a slow or busy machine
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{worker}/stat") as f:
            if f.read().split()[2] == "Z":  # exited, waiting to be reaped by init
                return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the verifier worker outlived its parent")


def test_a_comparisons_bound_starts_once_its_worker_has_imported_math_verify():
    """The bound is on the comparison, not on the worker's start: with a bound half as long as a worker's imports
    (which a loaded machine stretches past the default bound), the first comparison is still graded."""
    from raypipe.core.verify import _Worker

    worker = _Worker(2 << 30, 5.0)
    t0 = time.monotonic()
    worker.wait_ready()
    start = time.monotonic() - t0
    worker.kill()
    v = Verifier(workers=1, timeout_s=start / 2).setup()
    try:
        grades = v.grade_many([("\\frac{1}{2}", "0.5")])
    finally:
        v.close()
    assert [g.verdict for g in grades] == ["correct"], (start, grades)
