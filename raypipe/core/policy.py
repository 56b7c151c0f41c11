"""The keep/drop decision, shared by the batch job and the online scorer.

A rule ranks a source's verified-correct rows by a key (its primary value, then a stable hash of source and id to
break ties) and drops the k = floor(q * n + 0.5) rows with the highest keys (q * n rounded half up). The source's
threshold is the key of the lowest dropped row, so "drop iff key >= threshold" reproduces the batch decision for
any single row: this is what the online endpoint applies. The thresholds themselves are computed over the whole
dataset by the curation job (raypipe.curate.phase2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from raypipe.core.formats import FORMATS
from raypipe.core.proxies import PROXIES, ProxySettings, step_ratio
from raypipe.core.registry import registered
from raypipe.core.rules import RULES
from raypipe.core.schema import hash64
from raypipe.core.settings import SeedSettings
from raypipe.core.verify import CORRECT, UNVERIFIED


class Threshold(BaseModel):
    score: float  # the primary key of the lowest dropped row
    tiebreak: int  # its tie-break hash
    n_correct: int
    n_drop: int


class PolicySettings(ProxySettings, SeedSettings):
    """The settings a keep/drop decision is made of (the thresholds come from the data)."""

    rule: registered(RULES) = Field("top", description="which rows to drop: top (highest branch_score), random "
                                    "(seeded), longest (most tokens), keep-all (none)")
    drop_top: float = Field(0.10, ge=0.0, le=1.0, description="fraction q of verified-correct rows to drop per "
                            "source (k = floor(q*n + 0.5))")
    keep_incorrect: bool = Field(False, description="keep rows whose verdict is not 'correct' (else dropped with "
                                 "their verdict as the reason)")
    keep_unverified: bool = Field(False, description="keep rows with no reference answer (verdict unverified); "
                                  "they are never ranked")
    reference_source: str | None = Field(None, description="source whose steps per problem define step_ratio = 1 "
                                         "(needed by --proxy step-ratio)")

    def policy(self) -> "Policy":
        return Policy.model_validate({k: getattr(self, k) for k in PolicySettings.model_fields})


class Policy(PolicySettings):
    """Everything a decision depends on; stored in manifest.json and loaded by the online scorer."""

    thresholds: dict[str, Threshold | None] = {}
    default_threshold: float | None = None  # for sources the run never saw: a primary-key cut-off
    reference_steps: dict[str, float] = {}  # problem_id -> mean steps of the reference source
    # Where the batch job wrote the reference steps instead (a Parquet folder relative to the run's output,
    # problem_id -> steps): phase-3 tasks join their problems on it; the online scorer loads it into the dict.
    reference_steps_file: str | None = None
    # Per source, the reasoning markup its responses use; online scoring passes it to the row normaliser
    # (expected_markup=…) so that a markup-less response is read exactly as the batch job read it.
    markup_by_source: dict[str, str] = {}
    # (problem_id, reference_answer) of the problems whose reference agreeing answers contradict, kept out of the
    # data (curate --on-suspect-reference keep-out; the audit itself is raypipe.curate.audit).
    suspect_references: list[tuple[str, str]] = []

    def columns(self) -> list[str]:
        """The scored columns a decision reads."""
        return ["source", "id", "verdict", *PROXIES.get(self.proxy).columns, *RULES.get(self.rule).columns]


def n_to_drop(q: float, n: int) -> int:
    return int(math.floor(q * n + 0.5))


def tiebreaks(sources: list, ids: list) -> np.ndarray:
    return np.fromiter((hash64(str(s), str(i)) for s, i in zip(sources, ids)), dtype=np.int64, count=len(ids))


def branch_scores(table: pa.Table, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(branch_score, step_ratio) for each row under the policy's proxy."""
    ratio = step_ratio(table, policy) if "problem_id" in table.column_names else np.full(table.num_rows, np.nan)
    return np.asarray(PROXIES.create(policy.proxy).scores(table, policy), dtype=np.float64), ratio


def rank_keys(table: pa.Table, policy: Policy, branch_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(primary key, tie-break hash) of each row: the higher, the sooner dropped."""
    tb = tiebreaks(table.column("source").to_pylist(), table.column("id").to_pylist())
    return np.asarray(RULES.create(policy.rule).keys(table, policy, branch_score), dtype=np.float64), tb


ANSWER_NOTES = {"thinking": "answer from the reasoning's last \\boxed{} (no answer in the final part)",
                "final:display-equation": "answer from the final display equation (no \\boxed{} or answer phrase)"}


def _note(answer_source: str | None) -> str:
    if not answer_source:
        return ""
    note = ANSWER_NOTES.get(answer_source) or ANSWER_NOTES.get(answer_source.split(":")[0])
    return f"; {note}" if note else ""


def _column(table: pa.Table, name: str, default=None) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [default] * table.num_rows


@dataclass
class RowFacts:
    """What the decision rules read of one scored row."""

    verdict: str | None
    source: str
    duplicate_of: str | None
    format: str | None
    needs_reasoning: bool  # its format carries a reasoning (an empty one is a defect)
    n_steps: int | None
    over_threshold: bool | None  # a verified-correct row at or over its source's threshold (None: no threshold)
    known_source: bool  # the run saw this source (else the default threshold applies)
    suspect_reference: bool = False  # its problem's reference is one the policy keeps out


class DecisionRule:
    """One link of the decision chain: a (decision, reason) that settles the row, or None to pass it on."""

    name: ClassVar[str]

    def __call__(self, row: RowFacts, policy: "Policy") -> tuple[str, str] | None:
        raise NotImplementedError


class Duplicate(DecisionRule):
    name = "duplicate"

    def __call__(self, row, policy):
        if row.duplicate_of is not None:
            return "drop", f"duplicate (the same source, problem and response as id {row.duplicate_of})"
        return None


class EmptyReasoning(DecisionRule):
    name = "empty reasoning"

    def __call__(self, row, policy):
        if row.needs_reasoning and not row.n_steps:
            return "drop", f"empty reasoning (format {row.format} carries one)"
        return None


class SuspectReference(DecisionRule):
    name = "suspect_reference"

    def __call__(self, row, policy):
        if row.suspect_reference:
            return "drop", "suspect_reference (agreeing answers contradict the reference answer; see the manifest)"
        return None


class Unverified(DecisionRule):
    name = "verdict:unverified"

    def __call__(self, row, policy):
        if row.verdict != UNVERIFIED:
            return None
        if policy.keep_unverified or policy.keep_incorrect:
            return "keep", "kept (unverified: no reference answer)"
        return "drop", f"verdict:{row.verdict}"


class NotCorrect(DecisionRule):
    name = "verdict"

    def __call__(self, row, policy):
        return ("drop", f"verdict:{row.verdict}") if row.verdict != CORRECT and not policy.keep_incorrect else None


class Ranked(DecisionRule):
    name = "rule"

    def __call__(self, row, policy):
        if row.verdict == CORRECT and row.over_threshold:
            rule = RULES.get(policy.rule)
            return "drop", (f"rule:{policy.rule} ({rule.describes}, top {policy.drop_top:.0%} of "
                            f"{'its source' if row.known_source else 'all sources'})")
        return None


# In this order: the first rule that settles a row gives its decision and reason (the manifest counts them so).
DECISION_CHAIN: tuple[DecisionRule, ...] = (Duplicate(), EmptyReasoning(), SuspectReference(), Unverified(),
                                            NotCorrect(), Ranked())


def suspect_rows(table: pa.Table, policy: Policy) -> np.ndarray:
    """Whether each row's (problem_id, reference_answer) is one of the policy's suspect references."""
    if not policy.suspect_references or "problem_id" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    suspect = {tuple(x) for x in policy.suspect_references}
    pairs = zip(table.column("problem_id").to_pylist(), _column(table, "reference_answer"))
    return np.fromiter(((p, r) in suspect for p, r in pairs), dtype=bool, count=table.num_rows)


def decide(table: pa.Table, policy: Policy) -> dict[str, pa.Array]:
    """decision (keep|drop), reason, branch_score, step_ratio and threshold for each row."""
    score, ratio = branch_scores(table, policy)
    primary, tb = rank_keys(table, policy, score)
    drops = RULES.get(policy.rule).drops
    verdicts = table.column("verdict").to_pylist()
    sources = table.column("source").to_pylist()
    duplicates, formats = _column(table, "duplicate_of"), _column(table, "format")
    n_steps, where = _column(table, "n_steps", 1), _column(table, "answer_source")
    needs_reasoning = {f: FORMATS.get(f).requires_thinking for f in set(formats) if f in FORMATS}
    suspect = suspect_rows(table, policy)
    decisions, reasons, limits = [], [], []
    for i, (verdict, source) in enumerate(zip(verdicts, sources)):
        known = source in policy.thresholds
        th = policy.thresholds.get(source)
        limit = th.score if th is not None else (None if known else policy.default_threshold)
        limits.append(limit)
        over = None
        if drops and limit is not None:
            over = (primary[i] > th.score or (primary[i] == th.score and tb[i] >= th.tiebreak)) if th is not None \
                else primary[i] >= limit
        row = RowFacts(verdict, source, duplicates[i], formats[i], bool(needs_reasoning.get(formats[i])), n_steps[i],
                       over, known, bool(suspect[i]))
        decision, reason = next((d for d in (rule(row, policy) for rule in DECISION_CHAIN) if d), ("keep", "kept"))
        decisions.append(decision)
        reasons.append(reason + _note(where[i]))
    return {
        "branch_score": pa.array(score, mask=np.isnan(score)),
        "step_ratio": pa.array(ratio, mask=np.isnan(ratio)),
        "threshold": pa.array(limits, type=pa.float64()),
        "decision": pa.array(decisions, type=pa.string()),
        "reason": pa.array(reasons, type=pa.string()),
    }
