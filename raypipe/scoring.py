"""The one Scorer: verification, structure and the decision, shared by the batch job and the HTTP endpoint.

A stage in the NeMo-Curator style: construct with a config, `setup()` once per process (starts the bounded
verifier workers), then `score(table)` and `decide(table, policy)` on Arrow batches.
"""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa
from pydantic import BaseModel, Field

from raypipe import select
from raypipe.lexicon import Lexicon, get_lexicon
from raypipe.structure import STRUCTURE_FIELDS, measure
from raypipe.verify import VERIFIER_VERSION, Verifier, extract_answer


class ScoringConfig(BaseModel):
    lexicon: str = "paper"
    segmenter: str = Field("blank", description="'blank' (paragraphs), 'line', or a regex")
    verify_timeout_s: float = Field(5.0, gt=0)
    verify_workers: int = Field(1, ge=1)


SCORE_FIELDS = [
    ("answer_extracted", pa.string()),
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


class Scorer:
    def __init__(self, config: ScoringConfig | None = None):
        self.config = config or ScoringConfig()
        self.lexicon: Lexicon = get_lexicon(self.config.lexicon)
        self.verifier = Verifier(workers=self.config.verify_workers, timeout_s=self.config.verify_timeout_s)

    def setup(self) -> "Scorer":
        self.verifier.setup()
        return self

    def close(self) -> None:
        self.verifier.close()

    def versions(self) -> dict:
        return {"lexicon": self.lexicon.tag, "lexicon_markers": list(self.lexicon.markers),
                "verifier": VERIFIER_VERSION, "segmenter": self.config.segmenter}

    def score(self, records: pa.Table) -> pa.Table:
        """Add the verdict and structure columns to a table of normalised records."""
        finals = records.column("final").to_pylist()
        answers = [extract_answer(f or "") for f in finals]
        grades = self.verifier.grade_many(list(zip(answers, records.column("reference_answer").to_pylist())))
        cols = {
            "answer_extracted": pa.array(answers, type=pa.string()),
            "verdict": pa.array([g.verdict for g in grades], type=pa.string()),
            "verify_detail": pa.array([g.detail for g in grades], type=pa.string()),
            "verify_ms": pa.array([g.seconds * 1000.0 for g in grades], type=pa.float64()),
            **measure(records.column("thinking"), records.column("response"), self.lexicon, self.config.segmenter),
        }
        out = records
        for name, _ in SCORE_FIELDS:
            out = out.append_column(name, cols[name])
        return out

    def decide(self, scored: pa.Table, policy: select.Policy) -> pa.Table:
        """Add branch_score, threshold, decision and reason under a selection policy."""
        cols = select.decide(scored, policy)
        out = scored
        for name, _ in DECISION_FIELDS:
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, cols[name])
        return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
