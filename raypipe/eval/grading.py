"""Grading a model's outputs with the curation Scorer: the same answer extraction, verifier and structure
metrics as the batch job (raypipe.core.scoring), applied to generated samples."""
from __future__ import annotations

from raypipe.core.errors import RowError
from raypipe.core.formats import normalize_row
from raypipe.core.schema import records_table
from raypipe.core.scoring import Scorer

# The scored columns a sample keeps.
GRADE_FIELDS = ("answer_extracted", "verdict", "verify_detail", "n_steps", "n_branch_steps", "branch_ratio",
                "n_markers", "markers_per_1k_tokens", "n_tokens", "thinking_tokens", "thought_complete", "markup")


def grade_samples(samples: list[dict], scorer: Scorer) -> list[dict]:
    """Add verdicts and structure metrics to samples ({key, problem, reference_answer, response, ...})."""
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
        for i, cols in zip(where, scored):
            samples[i].update(cols)
    return samples
