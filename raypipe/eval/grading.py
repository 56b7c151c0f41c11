"""Grading a model's outputs with the curation Scorer: the same answer extraction, verifier and structure
metrics as the batch job (raypipe.core.scoring), applied to generated samples."""
from __future__ import annotations

from raypipe.core.errors import RowError
from raypipe.core.formats import normalize_row
from raypipe.core.schema import records_table
from raypipe.core.scoring import Scorer
from raypipe.core.structure import split_steps
from raypipe.diagnostics.judge import KeywordJudge

# The scored columns a sample keeps.
GRADE_FIELDS = ("answer_extracted", "verdict", "verify_detail", "n_steps", "n_branch_steps", "branch_ratio",
                "n_markers", "markers_per_1k_tokens", "n_tokens", "thinking_tokens", "thought_complete", "markup")


CUT_DETAIL = "cut by the length limit (finish_reason: length)"


def grade_samples(samples: list[dict], scorer: Scorer) -> list[dict]:
    """Add verdicts and structure metrics to samples ({key, problem, reference_answer, response, finish_reason,
    ...}). A sample cut by the length limit is `no_answer`, whatever its text holds: a reply cut inside its
    reasoning must not be graded as a final answer."""
    rows, where = [], []
    for i, s in enumerate(samples):
        if s.get("generation_error"):
            s.update(verdict="error", verify_detail=f"generation failed: {s['generation_error']}",
                     answer_extracted=None)
            continue
        try:
            rows.append(normalize_row({"id": s["key"], "problem": s["problem"], "answer": s["reference_answer"],
                                       "response": s["response"] or ""}, "flat", "model", "eval", i))
            where.append(i)
        except RowError as e:
            s.update(verdict="error", verify_detail=f"unusable output: {e}", answer_extracted=None)
    if rows:
        scored = scorer.score(records_table(rows)).select(list(GRADE_FIELDS)).to_pylist()
        judge = KeywordJudge(scorer.config.lexicon)
        for i, cols, row in zip(where, scored, rows):
            samples[i].update(cols)
            # the keyword step judge's labels of the reasoning, one letter per step (p, d, v, o)
            steps = split_steps(row.get("thinking") or "", scorer.config.segmenter)
            samples[i]["step_labels"] = "".join(label[0] for label in judge.label_steps(steps))
            if samples[i].get("finish_reason") == "length":  # never an answer: the reply did not end
                samples[i].update(verdict="no_answer", answer_extracted=None,
                                  verify_detail=f"{CUT_DETAIL} (would have read: {cols['verdict']})")
    return samples
