"""The one Scorer: verification, structure and the decision, shared by the batch job and the HTTP endpoint.

A stage in the NeMo-Curator style: construct with a config (and optionally a grader), `setup()` once per process
(starts the grader's bounded workers), then `score(table)` and `decide(table, policy)` on Arrow batches.
"""
from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import AliasChoices, BaseModel, Field

from raypipe.core import policy as decision
from raypipe.core.graders import GRADERS, Grader
from raypipe.core.lexicon import Lexicon, get_lexicon
from raypipe.core.proxies import PROXIES, ProxySettings
from raypipe.core.registry import registered
from raypipe.core.structure import STRUCTURE_FIELDS, StructureSettings, measure
from raypipe.core.settings import SettingsGroup


class GradingSettings(SettingsGroup):
    """How an answer is found and compared with the reference: curation and evaluation alike."""

    answer_from: Literal["final", "final-or-thinking"] = Field(
        "final", description="final: grade the final part only; final-or-thinking: a finished reasoning with no "
        "answer after it is graded from its last \\boxed{} (the reason says so)")
    grader: registered(GRADERS) = Field("math-verify", description="how final answers are compared with references")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound in seconds on each answer comparison",
                                    validation_alias=AliasChoices("verify_timeout_s", "verify_timeout"))


class VerifierSettings(SettingsGroup):
    verify_workers: int = Field(1, ge=1, description="math-verify worker processes per scorer")


class ScoringConfig(StructureSettings, ProxySettings, GradingSettings, VerifierSettings):
    """What a row's scores depend on (the decision adds a Policy)."""

    @classmethod
    def of(cls, settings: BaseModel) -> "ScoringConfig":
        """The scoring part of a command's settings (which inherit these fields, never copy them)."""
        return cls.model_validate({k: getattr(settings, k) for k in cls.model_fields if k in type(settings).model_fields})


SCORE_FIELDS = [
    ("answer_extracted", pa.string()),
    ("answer_source", pa.string()),  # where the answer was found: final:boxed|phrase|display-equation, thinking:boxed
    ("verdict", pa.string()),
    ("verify_detail", pa.string()),
    ("verify_ms", pa.float64()),
    *STRUCTURE_FIELDS,
]
DECISION_FIELDS = [
    ("branch_score", pa.float64()),
    ("step_ratio", pa.float64()),
    ("threshold", pa.float64()),
    ("decision", pa.string()),
    ("reason", pa.string()),
]


def score_fields(config: ScoringConfig) -> list[tuple[str, pa.DataType]]:
    """The columns Scorer.score adds: the verdict and structure metrics, then the proxy's own."""
    return [*SCORE_FIELDS, *PROXIES.get(config.proxy).fields]


class Scorer:
    def __init__(self, config: ScoringConfig | None = None, grader: Grader | None = None):
        self.config = config or ScoringConfig()
        self.lexicon: Lexicon = get_lexicon(self.config.lexicon)
        self.grader = grader or GRADERS.create(self.config.grader, self.config)
        self.proxy = PROXIES.create(self.config.proxy)
        self.fields = score_fields(self.config)

    def setup(self) -> "Scorer":
        self.grader.setup()
        return self

    def close(self) -> None:
        self.grader.close()

    def versions(self) -> dict:
        return {"lexicon": self.lexicon.tag, "lexicon_markers": list(self.lexicon.markers),
                "verifier": self.grader.version, "segmenter": self.config.segmenter}

    def score(self, records: pa.Table) -> pa.Table:
        """Add the verdict and structure columns (and the proxy's own) to a table of normalised records."""
        answers, where = self.answers(records)
        grades = self.grader.grade_many(list(zip(answers, records.column("reference_answer").to_pylist())))
        structure = measure(records.column("thinking"), records.column("response"), self.lexicon,
                            self.config.segmenter, records.column("final"))
        cols = {
            "answer_extracted": pa.array(answers, type=pa.string()),
            "answer_source": pa.array(where, type=pa.string()),
            "verdict": pa.array([g.verdict for g in grades], type=pa.string()),
            "verify_detail": pa.array([g.detail for g in grades], type=pa.string()),
            "verify_ms": pa.array([g.seconds * 1000.0 for g in grades], type=pa.float64()),
            **structure,
            **self.proxy.measure(records, structure),
        }
        out = records
        for name, _ in self.fields:
            out = out.append_column(name, cols[name])
        return out

    def answers(self, records: pa.Table) -> tuple[list[str | None], list[str | None]]:
        """Each record's answer and where it was found (`answer_from` decides whether reasoning text counts)."""
        answers, where = [], []
        from_thinking = self.config.answer_from == "final-or-thinking"
        complete = records.column("thought_complete").to_pylist()
        thinking = records.column("thinking").to_pylist() if from_thinking else []
        for i, final in enumerate(records.column("final").to_pylist()):
            answer, how = self.grader.extract(final or "")
            place = "final"
            if answer is None and from_thinking and complete[i]:
                answer, how = self.grader.extract(thinking[i] or "", boxed_only=True)
                place = "thinking"
            answers.append(answer)
            where.append(f"{place}:{how}" if answer is not None else None)
        return answers, where

    def decide(self, scored: pa.Table, policy: decision.Policy) -> pa.Table:
        """Add branch_score, threshold, decision and reason under a selection policy."""
        cols = decision.decide(scored, policy)
        out = scored
        for name, _ in DECISION_FIELDS:
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, cols[name])
        return out
