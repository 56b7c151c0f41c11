"""Selection rules: which verified-correct rows to drop, per source, at an exact quantile over the whole dataset.

Every rule ranks rows by a key (primary value, then a stable hash of source and id to break ties). For a
source with n correct rows it drops the k = floor(q * n + 0.5) rows with the highest keys (q * n rounded half
up). The source's threshold is the key of the lowest dropped row, so "drop iff key >= threshold" reproduces
the batch decision for any single row: this is what the online endpoint applies.
"""
from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from raypipe.verify import CORRECT

Rule = Literal["top", "random", "longest", "keep-all"]
Proxy = Literal["keyword-share", "step-ratio"]


class Threshold(BaseModel):
    score: float  # the primary key of the lowest dropped row
    tiebreak: int  # its tie-break hash
    n_correct: int
    n_drop: int


class Policy(BaseModel):
    """Everything a decision depends on; stored in manifest.json and loaded by the online scorer."""

    rule: Rule = "top"
    drop_top: float = Field(0.10, ge=0.0, le=1.0)
    proxy: Proxy = "keyword-share"
    seed: int = 0
    keep_incorrect: bool = False
    reference_source: str | None = None
    thresholds: dict[str, Threshold | None] = {}
    default_threshold: float | None = None  # for sources the run never saw: a primary-key cut-off
    reference_steps: dict[str, float] = {}  # problem_id -> mean steps of the reference source
    # Per source, the reasoning markup its responses use; online scoring passes it to schema.normalize_row
    # (expected_markup=…) so that a markup-less response is read exactly as the batch job read it.
    markup_by_source: dict[str, str] = {}


def n_to_drop(q: float, n: int) -> int:
    return int(math.floor(q * n + 0.5))


def _hash64(*parts: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big") >> 1  # fits a signed int64 and JSON


def tiebreaks(sources: list, ids: list) -> np.ndarray:
    return np.fromiter((_hash64(str(s), str(i)) for s, i in zip(sources, ids)), dtype=np.int64, count=len(ids))


def branch_scores(table: pa.Table, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(branch_score, step_ratio) for each row under the policy's proxy."""
    n_steps = table.column("n_steps").to_numpy(zero_copy_only=False).astype(np.float64)
    step_ratio = np.full(len(n_steps), np.nan)
    if policy.reference_steps:
        ref = np.array([policy.reference_steps.get(p, np.nan) for p in table.column("problem_id").to_pylist()])
        with np.errstate(divide="ignore", invalid="ignore"):
            step_ratio = np.where(ref > 0, n_steps / ref, np.nan)
    if policy.proxy == "step-ratio":
        return step_ratio, step_ratio
    ratio = table.column("branch_ratio").to_numpy(zero_copy_only=False)
    return np.asarray(ratio, dtype=np.float64), step_ratio


def rank_keys(table: pa.Table, policy: Policy, branch_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sources, ids = table.column("source").to_pylist(), table.column("id").to_pylist()
    tb = tiebreaks(sources, ids)
    if policy.rule == "random":
        seeded = np.fromiter((_hash64(str(policy.seed), str(s), str(i)) for s, i in zip(sources, ids)),
                             dtype=np.int64, count=len(ids))
        return seeded.astype(np.float64) / float(2**63), tb
    if policy.rule == "longest":
        return table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.float64), tb
    return np.where(np.isnan(branch_score), -np.inf, branch_score), tb


def compute_thresholds(table: pa.Table, policy: Policy) -> Policy:
    """The policy with per-source thresholds filled in from the whole dataset (exact, not per shard)."""
    thresholds: dict[str, Threshold | None] = {}
    score, _ = branch_scores(table, policy)
    primary, tb = rank_keys(table, policy, score)
    sources = np.array(table.column("source").to_pylist(), dtype=object)
    correct = np.array(pc.equal(table.column("verdict"), CORRECT).to_pylist(), dtype=bool)
    all_primary = []
    for source in sorted(set(sources.tolist())):
        mask = (sources == source) & correct
        n = int(mask.sum())
        k = 0 if policy.rule == "keep-all" else n_to_drop(policy.drop_top, n)
        if k == 0:
            thresholds[source] = None
            continue
        p, t = primary[mask], tb[mask]
        order = np.lexsort((-t, -p))  # descending by (primary, tiebreak)
        last = order[k - 1]
        thresholds[source] = Threshold(score=float(p[last]), tiebreak=int(t[last]), n_correct=n, n_drop=k)
        all_primary.append(p)
    default = None
    if all_primary and policy.rule != "keep-all":
        values = np.concatenate(all_primary)
        values = values[np.isfinite(values)]
        if len(values):
            default = float(np.quantile(values, 1.0 - policy.drop_top, method="higher"))
    return policy.model_copy(update={"thresholds": thresholds, "default_threshold": default})


def decide(table: pa.Table, policy: Policy) -> dict[str, pa.Array]:
    """decision (keep|drop), reason, branch_score, step_ratio and threshold for each row."""
    score, step_ratio = branch_scores(table, policy)
    primary, tb = rank_keys(table, policy, score)
    verdicts = table.column("verdict").to_pylist()
    sources = table.column("source").to_pylist()
    decisions, reasons, limits = [], [], []
    for i, (verdict, source) in enumerate(zip(verdicts, sources)):
        known = source in policy.thresholds
        th = policy.thresholds.get(source)
        limit = th.score if th is not None else (None if known else policy.default_threshold)
        limits.append(limit)
        if verdict != CORRECT and not policy.keep_incorrect:
            decisions.append("drop")
            reasons.append(f"verdict:{verdict}")
            continue
        if verdict == CORRECT and policy.rule != "keep-all" and limit is not None:
            if th is not None:
                over = primary[i] > th.score or (primary[i] == th.score and tb[i] >= th.tiebreak)
            else:
                over = primary[i] >= limit
            if over:
                decisions.append("drop")
                what = {"top": "highest branch_score", "random": "random pick", "longest": "longest"}[policy.rule]
                reasons.append(f"rule:{policy.rule} ({what}, top {policy.drop_top:.0%} of "
                               f"{'its source' if known else 'all sources'})")
                continue
        decisions.append("keep")
        reasons.append("kept")
    return {
        "branch_score": pa.array(score, mask=np.isnan(score)),
        "step_ratio": pa.array(step_ratio, mask=np.isnan(step_ratio)),
        "threshold": pa.array(limits, type=pa.float64()),
        "decision": pa.array(decisions, type=pa.string()),
        "reason": pa.array(reasons, type=pa.string()),
    }
