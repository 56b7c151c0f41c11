"""Exact per-source thresholds of a table held whole, in memory: the reference the distributed phase 2 (radix select
over chunks, raypipe.curate.phase2) is checked against, and the in-process kernels of the throughput benchmark."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core.policy import Policy, Threshold, branch_scores, n_to_drop, rank_keys
from raypipe.core.rules import RULES
from raypipe.core.verify import CORRECT


def compute_thresholds(table: pa.Table, policy: Policy) -> Policy:
    """The policy with per-source thresholds filled in from the whole dataset."""
    thresholds: dict[str, Threshold | None] = {}
    score, _ = branch_scores(table, policy)
    primary, tb = rank_keys(table, policy, score)
    sources = np.array(table.column("source").to_pylist(), dtype=object)
    correct = np.array(pc.equal(table.column("verdict"), CORRECT).to_pylist(), dtype=bool)
    drops = RULES.get(policy.rule).drops
    all_primary = []
    for source in sorted(set(sources.tolist())):
        mask = (sources == source) & correct
        n = int(mask.sum())
        k = n_to_drop(policy.drop_top, n) if drops else 0
        if k == 0:
            thresholds[source] = None
            continue
        p, t = primary[mask], tb[mask]
        order = np.lexsort((-t, -p))  # descending by (primary, tiebreak)
        last = order[k - 1]
        thresholds[source] = Threshold(score=float(p[last]) + 0.0, tiebreak=int(t[last]), n_correct=n, n_drop=k)
        all_primary.append(p)
    default = None
    if all_primary and drops:
        values = np.concatenate(all_primary)
        values = values[np.isfinite(values)]
        if len(values):
            default = float(np.quantile(values, 1.0 - policy.drop_top, method="higher")) + 0.0  # no -0.0
    return policy.model_copy(update={"thresholds": thresholds, "default_threshold": default})
