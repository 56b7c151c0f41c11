"""The audit of the references, the decision rule that keeps suspects out, and the input fingerprint: pure parts,
on hand-made rows (the whole job is tests/test_curate_policy.py)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from raypipe.core.graders import GRADERS
from raypipe.core.policy import DECISION_CHAIN, Policy, decide
from raypipe.core.scoring import ScoringConfig
from raypipe.curate import audit, fingerprint
from raypipe.curate.groupby import partition_problems


def rows(*specs: tuple, first: int = 0) -> pa.Table:
    """(problem_id, reference, answer, verdict, source) rows; ids are numbered from `first`, and a problem's text is
    its id, spelled out."""
    columns = ["problem_id", "reference_answer", "answer_extracted", "verdict", "source"]
    table = {c: [s[i] for s in specs] for i, c in enumerate(columns)}
    table["id"] = [f"r{first + i:02d}" for i in range(len(specs))]
    table["problem"] = [f"What is {p}? " * 40 for p in table["problem_id"]]
    return pa.table({c: pa.array(table[c], pa.string()) for c in audit.COLUMNS})


CHUNK_A = rows(
    ("two-sources", "5", "7", "wrong", "a"),
    ("spellings", "1/2", "0.3", "wrong", "a"),
    ("spellings", "1/2", "\\frac{3}{10}", "wrong", "a"),
    ("too-few", "9", "8", "wrong", "a"),
    ("outvoted", "4", "6", "wrong", "a"),
    ("outvoted", "4", "4", "correct", "a"),
    ("disagree", "2", "3", "wrong", "a"),
    ("no-answer", "2", None, "no_answer", "a"),
)
CHUNK_B = rows(
    ("two-sources", "5", "7.0", "wrong", "b"),
    ("spellings", "1/2", "$0.3$", "wrong", "a"),
    ("too-few", "9", "8", "wrong", "a"),
    ("outvoted", "4", "6", "wrong", "b"),
    ("outvoted", "4", "4", "correct", "b"),
    ("outvoted", "4", "4", "correct", "c"),
    ("disagree", "2", "5", "wrong", "b"),
    ("no-answer", "2", None, "no_answer", "b"),
    first=10,
)


@pytest.fixture(scope="module")
def grader():
    g = GRADERS.create("math-verify", ScoringConfig(verify_timeout_s=10.0)).setup()
    yield g.grade_many
    g.close()


@pytest.mark.parametrize("buckets", [1, 3])
def test_agreeing_answers_flag_a_reference_whatever_the_chunks_and_buckets(grader, buckets):
    parts = [partition_problems(audit.partial(t), buckets) for t in (CHUNK_A, CHUNK_B)]
    found = sorted((s for j in range(buckets) for s in audit.suspects([p[j] for p in parts], grader, 3)),
                   key=lambda s: s["problem_id"])
    by_id = {s["problem_id"]: s for s in found}
    # two sources agreeing (7 and 7.0 verified equal); three rows of one source whose spellings the verifier equates
    assert sorted(by_id) == ["spellings", "two-sources"]
    two = by_id["two-sources"]
    assert (two["reference"], two["answer"], two["rows"], two["sources"], two["correct_rows"]) == \
        ("5", "7", 2, {"a": 1, "b": 1}, 0)
    assert two["examples"] == [{"source": "a", "id": "r00"}, {"source": "b", "id": "r10"}]
    assert two["problem"] == ("What is two-sources? " * 40)[:audit.PROBLEM_CHARS]
    spelled = by_id["spellings"]
    assert spelled["rows"] == 3 and spelled["sources"] == {"a": 3} and len(spelled["spellings"]) == 2
    # too-few: two rows of one source, enough when k = 2; outvoted: the reference has more rows (3 against 2);
    # disagree: no two answers agree
    loose = audit.suspects([audit.partial(pa.concat_tables([CHUNK_A, CHUNK_B]))], grader, 2)
    assert [s["problem_id"] for s in loose] == ["spellings", "too-few", "two-sources"]


def test_no_candidates_no_verifier_call():
    def refuses(pairs):
        raise AssertionError("nothing to compare")

    assert audit.suspects([audit.partial(rows(("p", "1", "2", "wrong", "a")))], refuses, 3) == []
    assert audit.suspects([], refuses, 3) == []


def scored(*specs: tuple) -> pa.Table:
    """(id, problem_id, reference_answer, verdict) rows as a decision reads them."""
    n = len(specs)
    return pa.table({"id": [s[0] for s in specs], "source": ["a"] * n, "problem_id": [s[1] for s in specs],
                     "reference_answer": [s[2] for s in specs], "verdict": [s[3] for s in specs],
                     "branch_ratio": [0.1] * n, "n_steps": [3] * n})


def test_keep_out_drops_the_suspect_problems_rows_and_flag_drops_nothing_more():
    table = scored(("r1", "p", "5", "wrong"), ("r2", "p", "5", "correct"), ("r3", "p", "6", "correct"),
                   ("r4", "q", "5", "correct"))
    flag = Policy(rule="keep-all")
    plain = decide(table, flag)
    assert plain["reason"].to_pylist() == ["verdict:wrong", "kept", "kept", "kept"]
    out = decide(table, flag.model_copy(update={"suspect_references": [("p", "5")]}))
    reasons = out["reason"].to_pylist()
    assert [r.split(" ")[0] for r in reasons] == ["suspect_reference", "suspect_reference", "kept", "kept"]
    assert out["decision"].to_pylist() == ["drop", "drop", "keep", "keep"]
    names = [r.name for r in DECISION_CHAIN]
    assert names.index("suspect_reference") < names.index("verdict")
    # a policy stored in a manifest before the audit existed loads without suspects
    assert Policy.model_validate({"rule": "top"}).suspect_references == []


def test_fingerprint_is_the_records_not_their_chunking_and_sees_a_reference():
    t = pa.table({"content_hash": [f"h{i}" for i in range(10)], "id": [str(i) for i in range(10)],
                  "reference_answer": ["1"] * 10})
    whole = fingerprint.combine([fingerprint.records_hash(t)])
    split = fingerprint.combine([fingerprint.chunk_hex(fingerprint.records_hash(t.slice(0, 4))),
                                 fingerprint.chunk_hex(fingerprint.records_hash(t.slice(4)))])
    assert whole == split and len(whole) == 32
    changed = t.set_column(2, "reference_answer", pa.array(["1"] * 9 + ["2"]))
    assert fingerprint.combine([fingerprint.records_hash(changed)]) != whole
    assert fingerprint.combine([fingerprint.records_hash(t.slice(1))]) != whole
    rejects = pa.table({"raw": ["{bad"]})
    assert fingerprint.combine([fingerprint.records_hash(t) + fingerprint.rejects_hash(rejects)]) != whole
