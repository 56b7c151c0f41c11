"""Per-source aggregates of the loss probe, from the per-trajectory sums (exact, token-weighted)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from raypipe.diagnostics.loss import LOSS_EDGES, N_DECILES

SUM_COLUMNS = ["n_tokens", "sum_loss", "sum_entropy", "n_routine", "sum_loss_key", "n_marker_tokens",
               "sum_loss_marker", "sum_entropy_marker", "n_markers"]
LIST_COLUMNS = ["decile_count", "decile_sum_loss", "decile_sum_entropy", "loss_hist"]
SUMMARY_COLUMNS = ["id", "source", "error", "truncated", "mean_loss", "branch_ratio"] + SUM_COLUMNS + LIST_COLUMNS


def _div(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def hist_quantiles(hist: np.ndarray, qs=(0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[str, float | None]:
    """Quantiles of token loss read off the histogram (upper edge of the bin holding the quantile)."""
    total = hist.sum()
    if not total:
        return {f"p{int(q * 100)}": None for q in qs}
    cdf = np.cumsum(hist) / total
    return {f"p{int(q * 100)}": float(LOSS_EDGES[1:][np.searchsorted(cdf, q)]) for q in qs}


def source_summary(table: pa.Table, routine_threshold: float) -> dict[str, dict]:
    rows = table.select([c for c in SUMMARY_COLUMNS if c in table.column_names]).to_pylist()
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["source"]].append(r)
    out = {}
    for source in sorted(groups):
        rs = groups[source]
        ok = [r for r in rs if r["error"] is None]
        s = {c: float(sum(r[c] for r in ok)) for c in SUM_COLUMNS}
        lists = {c: np.sum([r[c] for r in ok], axis=0) if ok else np.zeros(N_DECILES) for c in LIST_COLUMNS}
        n, n_marker = s["n_tokens"], s["n_marker_tokens"]
        hist = np.asarray(lists["loss_hist"], dtype=np.int64) if ok else np.zeros(len(LOSS_EDGES) - 1, np.int64)
        errors: dict[str, int] = defaultdict(int)
        for r in rs:
            if r["error"] is not None:
                errors[r["error"].split(":")[0][:80]] += 1
        out[source] = {
            "trajectories": len(rs),
            "scored": len(ok),
            "errors": dict(errors),
            "truncated": sum(1 for r in ok if r["truncated"]),
            "tokens": int(n),
            "mean_loss": _div(s["sum_loss"], n),
            "mean_trajectory_loss": float(np.mean([r["mean_loss"] for r in ok])) if ok else None,
            "routine_share": _div(s["n_routine"], n),
            "key_token_loss": _div(s["sum_loss_key"], n - s["n_routine"]),
            "marker_tokens": int(n_marker),
            "markers": int(s["n_markers"]),
            "marker_loss": _div(s["sum_loss_marker"], n_marker),
            "other_loss": _div(s["sum_loss"] - s["sum_loss_marker"], n - n_marker),
            "mean_entropy": _div(s["sum_entropy"], n),
            "marker_entropy": _div(s["sum_entropy_marker"], n_marker),
            "other_entropy": _div(s["sum_entropy"] - s["sum_entropy_marker"], n - n_marker),
            "loss_by_decile": [_div(a, b) for a, b in zip(lists["decile_sum_loss"], lists["decile_count"])],
            "entropy_by_decile": [_div(a, b) for a, b in zip(lists["decile_sum_entropy"], lists["decile_count"])],
            "tokens_by_decile": [int(x) for x in lists["decile_count"]],
            "loss_quantiles": hist_quantiles(hist),
            "loss_hist": hist.tolist(),
            "routine_threshold": routine_threshold,
        }
    return out
