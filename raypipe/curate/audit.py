"""An audit of the reference answers: a problem whose reference is contradicted by answers that agree with each other.

A (problem_id, reference_answer) is a suspect when, among its rows graded `wrong` (an answer verified unequal to
the reference), one answer - spellings the grader verifies equal counted together - comes from at least two
sources or at least `suspect_min_samples` rows, and more rows give it than give the reference (`correct` rows).
The curation job flags suspects in the manifest and the report, with example ids; with `--on-suspect-reference
keep-out` their rows are dropped with reason suspect_reference. Nothing is re-labelled.

Bounded memory, in phase 2 (raypipe.curate.phase2): `partial` tallies one chunk's rows by (problem, reference,
normalised answer, source), the tallies are split into problem buckets, and `suspects` combines one bucket's
tallies and verifies the candidates. Pure pyarrow and the grader: no Ray.
"""
from __future__ import annotations

from typing import Callable, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from raypipe.core.settings import SettingsGroup
from raypipe.core.verify import CORRECT, WRONG, Grade, normalize_answer

COLUMNS = ["problem_id", "problem", "reference_answer", "id", "answer_extracted", "verdict", "source"]
KEYS = ["problem_id", "reference", "answer", "source"]
# One row per KEYS group of a chunk: its row count, its smallest id (an example) and the problem's opening. The
# answer (and source) is null on the rows that count the reference's own support (verified-correct rows).
PARTIAL_SCHEMA = pa.schema([("problem_id", pa.string()), ("reference", pa.string()), ("answer", pa.string()),
                            ("source", pa.string()), ("n", pa.int64()), ("example", pa.string()),
                            ("problem", pa.string())])
MAX_ANSWERS = 16  # distinct answers of one problem compared with each other, the most frequent first
MAX_EXAMPLES = 6  # example row ids per suspect (the smallest id of each source and spelling)
PROBLEM_CHARS = 200  # the opening of the problem text a suspect carries
GradeMany = Callable[[list[tuple[str, str]]], list[Grade]]  # a grader's grade_many: (answer, reference) pairs


class ReferenceAuditSettings(SettingsGroup):
    """The audit of the reference answers (this module): what makes a reference suspect, and what then happens."""

    on_suspect_reference: Literal["flag", "keep-out"] = Field(
        "flag", description="a problem whose reference answer is contradicted by agreeing answers (one answer, its "
        "spellings verified equal, from two sources or --suspect-min-samples rows, more rows than give the "
        "reference): flag it in the manifest and report, or keep-out its rows too (dropped, reason "
        "suspect_reference, not ranked); nothing is re-labelled")
    suspect_min_samples: int = Field(
        3, ge=2, description="rows of one source giving the same wrong answer that make a reference suspect (from two "
        "or more sources, two rows suffice)")


def _tally(rows: pa.Table) -> pa.Table:
    """PARTIAL_SCHEMA from rows (or tallies: `n` summed) grouped by KEYS."""
    count = ("n", "sum") if "n" in rows.column_names else ([], "count_all")
    out = rows.group_by(KEYS, use_threads=False).aggregate([count, ("example", "min"), ("problem", "min")])
    return out.rename_columns([*KEYS, "n", "example", "problem"]).select(PARTIAL_SCHEMA.names).cast(PARTIAL_SCHEMA)


def partial(ranked: pa.Table) -> pa.Table:
    """One chunk's tallies (PARTIAL_SCHEMA): wrong rows by normalised answer and source, correct rows per problem."""
    t = ranked.select(COLUMNS)
    wrong = t.filter(pc.and_(pc.equal(t.column("verdict"), WRONG), pc.is_valid(t.column("answer_extracted"))))
    correct = t.filter(pc.equal(t.column("verdict"), CORRECT))
    answers = pa.array([normalize_answer(a) for a in wrong.column("answer_extracted").to_pylist()], pa.string())

    def rows(part: pa.Table, answer: pa.Array, source: pa.Array) -> pa.Table:
        return pa.table({"problem_id": part.column("problem_id"), "reference": part.column("reference_answer"),
                         "answer": answer, "source": source, "example": part.column("id"),
                         "problem": pc.utf8_slice_codeunits(part.column("problem"), 0, PROBLEM_CHARS)})
    nulls = pa.nulls(correct.num_rows, pa.string())
    schema = PARTIAL_SCHEMA.remove(PARTIAL_SCHEMA.get_field_index("n"))
    both = pa.concat_tables([rows(wrong, answers, wrong.column("source")).cast(schema),
                             rows(correct, nulls, nulls).cast(schema)])
    return _tally(both) if both.num_rows else PARTIAL_SCHEMA.empty_table()


def suspects(parts: list[pa.Table], grade: GradeMany, min_samples: int) -> list[dict]:
    """The suspect references among one bucket's tallies (every chunk's part of the bucket), sorted; `grade`
    compares two answers (a grader's grade_many)."""
    whole = _tally(pa.concat_tables([PARTIAL_SCHEMA.empty_table(), *parts]))
    wrong = whole.filter(pc.is_valid(whole.column("answer")))
    per_problem = wrong.group_by(["problem_id", "reference"], use_threads=False).aggregate([("n", "sum")])
    # a suspect needs two agreeing rows at least: problems with fewer wrong rows are never read into Python
    candidates = per_problem.filter(pc.greater_equal(per_problem.column("n_sum"), 2)).select(["problem_id",
                                                                                             "reference"])
    if candidates.num_rows == 0:
        return []
    problems: dict[tuple, dict] = {}
    for r in whole.join(candidates, ["problem_id", "reference"], join_type="inner").to_pylist():
        p = problems.setdefault((r["problem_id"], r["reference"]),
                                {"correct": 0, "answers": {}, "examples": {}, "problem": r["problem"]})
        if r["answer"] is None:
            p["correct"] += r["n"]
        else:
            p["answers"].setdefault(r["answer"], {})[r["source"]] = r["n"]
            p["examples"][(r["answer"], r["source"])] = r["example"]
    out = []
    for (problem_id, reference), p in sorted(problems.items()):
        best = _agreement(p["answers"], grade)
        rows, sources = sum(best["sources"].values()), best["sources"]
        if (len(sources) >= 2 or rows >= min_samples) and rows > p["correct"]:
            examples = sorted({(s, p["examples"][(a, s)]) for a in best["spellings"] for s in p["answers"][a]})
            out.append({"problem_id": problem_id, "problem": p["problem"], "reference": reference,
                        "answer": best["answer"], "rows": rows, "sources": dict(sorted(sources.items())),
                        "spellings": best["spellings"], "correct_rows": p["correct"],
                        "wrong_rows": sum(sum(s.values()) for s in p["answers"].values()),
                        "examples": [{"source": s, "id": i} for s, i in examples[:MAX_EXAMPLES]]})
    return out


def _agreement(answers: dict[str, dict[str, int]], grade: GradeMany) -> dict:
    """The largest class of answers the grader verifies equal (the MAX_ANSWERS most frequent spellings), with the
    rows of each source that gave it; its answer is its most frequent spelling."""
    order = sorted(answers, key=lambda a: (-sum(answers[a].values()), a))[:MAX_ANSWERS]
    classes: list[dict] = []
    for a in order:
        grades = grade([(a, c["answer"]) for c in classes]) if classes else []
        home = next((c for c, g in zip(classes, grades) if g.verdict == CORRECT), None)
        if home is None:
            home = {"answer": a, "sources": {}, "spellings": []}
            classes.append(home)
        home["spellings"].append(a)
        for s, n in answers[a].items():
            home["sources"][s] = home["sources"].get(s, 0) + n
    return max(classes, key=lambda c: (sum(c["sources"].values()), len(c["sources"])))
