"""Per-source statistics of the step judge: label shares, transitions, failure rate, link to branch_ratio."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from raypipe.diagnostics.judge import LABELS, correlation, label_shares, transition_counts, transition_probs

SUMMARY_COLUMNS = ["id", "source", "error", "labels", "n_requests", "n_failed_requests", "n_partial_requests",
                   "n_unlabelled", "propose_share", "branch_ratio", "n_steps", "n_steps_total"]


def source_summary(table: pa.Table) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in table.select(SUMMARY_COLUMNS).to_pylist():
        groups[r["source"]].append(r)
    out = {}
    for source in sorted(groups):
        rs = groups[source]
        seqs = [r["labels"] or [] for r in rs]
        counts, shares = label_shares(seqs)
        trans = transition_counts(seqs)
        probs = transition_probs(trans)
        n_steps = sum(len(s) for s in seqs)
        n_req = sum(r["n_requests"] or 0 for r in rs)
        shares_t = [r["propose_share"] for r in rs if r["propose_share"] is not None]
        out[source] = {
            "trajectories": len(rs),
            "errors": sum(r["error"] is not None for r in rs),
            "with_steps": sum(1 for s in seqs if s),
            "steps": n_steps,
            "steps_not_judged": sum((r["n_steps_total"] or 0) - (r["n_steps"] or 0) for r in rs),
            "label_counts": counts,
            "label_shares": shares,
            "propose_share": shares["propose"],
            "mean_trajectory_propose_share": float(np.mean(shares_t)) if shares_t else None,
            "unlabelled_rate": counts["unlabelled"] / n_steps if n_steps else None,
            "requests": n_req,
            "failed_requests": sum(r["n_failed_requests"] or 0 for r in rs),
            "partial_requests": sum(r["n_partial_requests"] or 0 for r in rs),
            "request_failure_rate": sum(r["n_failed_requests"] or 0 for r in rs) / n_req if n_req else None,
            "transition_labels": list(LABELS),
            "transition_counts": trans.tolist(),
            "transition_probs": probs,
            "p_propose_propose": probs[0][0],
            "propose_vs_branch_ratio": correlation([r["propose_share"] for r in rs], [r["branch_ratio"] for r in rs]),
        }
    return out
