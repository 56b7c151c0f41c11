"""manifest.json and report.html (with embedded PNG plots) for a curation run."""
from __future__ import annotations

import html
import json
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa

from raypipe.core import io as rio
from raypipe.core.html import STYLE, images, png_base64, pyplot, table
from raypipe.core.policy import Policy
from raypipe.core.proxies import PROXIES
from raypipe.core.verify import VERDICTS
from raypipe.core.versions import versions

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def build_manifest(config, inputs: list[str], stats: list[dict], ranks: pa.Table | None, policy: Policy,
                   decisions: Counter, seconds: float) -> dict:
    n_input = sum(s["input"] for s in stats)
    n_rejected = sum(s["rejected"] for s in stats)
    kept = sum(n for (_, d), n in decisions.items() if d == "keep")
    dropped = sum(n for (_, d), n in decisions.items() if d == "drop")
    by_source: dict[str, dict] = {}
    if ranks is not None and ranks.num_rows:
        cols = ranks.select(["source", "verdict", "branch_ratio"]).to_pydict()
        verdicts: dict = defaultdict(Counter)
        ratios: dict = defaultdict(list)
        for s, v, r in zip(cols["source"], cols["verdict"], cols["branch_ratio"]):
            verdicts[s][v] += 1
            if r is not None:
                ratios[s].append(r)
        for s in sorted(verdicts):
            th = policy.thresholds.get(s)
            q = np.quantile(ratios[s], QUANTILES).tolist() if ratios[s] else []
            by_source[s] = {
                "rows": sum(verdicts[s].values()),
                "kept": decisions.get((s, "keep"), 0),
                "dropped": decisions.get((s, "drop"), 0),
                "verdicts": {v: verdicts[s].get(v, 0) for v in VERDICTS},
                "threshold": th.model_dump() if th else None,
                "branch_ratio_quantiles": dict(zip([f"p{int(x * 100)}" for x in QUANTILES], q)),
            }
    total_bytes = sum(s.get("bytes", 0) for s in stats)
    return {
        "counts": {"input": n_input, "kept": kept, "dropped": dropped, "rejected": n_rejected},
        "balanced": n_input == kept + dropped + n_rejected,
        "by_source": by_source,
        "config": config.model_dump(),
        "config_hash": config.hash(),
        "policy": json.loads(policy.model_dump_json()),
        "versions": versions(config.lexicon, config.grader),
        "inputs": [{"uri": s["uri"], "rows": s["input"], "rejected": s["rejected"]} for s in stats],
        "synthetic_input": config.synthetic,
        "timing": {"seconds": round(seconds, 3), "response_bytes": total_bytes,
                   "MB_per_s": round(total_bytes / 1e6 / seconds, 3) if seconds else None},
        "rounding": "per source, k = floor(q * n_correct + 0.5) rows dropped (q * n rounded half up)",
    }


def plots(ranks: pa.Table, policy: Policy) -> dict[str, str]:
    plt = pyplot()
    d = ranks.select(["source", "verdict", "branch_ratio", "n_steps", "n_tokens"]).to_pydict()
    sources = sorted(set(d["source"]))
    out = {}
    fig, axes = plt.subplots(len(sources), 1, figsize=(7, 2.2 * len(sources)), squeeze=False)
    for ax, s in zip(axes[:, 0], sources):
        rows = [(r, v) for src, r, v in zip(d["source"], d["branch_ratio"], d["verdict"]) if src == s and r is not None]
        bins = np.linspace(0, max([r for r, _ in rows] + [1e-9]), 41)
        ax.hist([r for r, _ in rows], bins=bins, color="#bbccee", label="all rows")
        ax.hist([r for r, v in rows if v == "correct"], bins=bins, color="#4477aa", label="verified correct")
        th = policy.thresholds.get(s)
        if th is not None and policy.rule == "top" and PROXIES.get(policy.proxy).label == "branch_ratio":
            ax.axvline(th.score, color="#cc3311", linestyle="--", label=f"drop >= {th.score:.3f}")
        ax.legend(fontsize=8)
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("branch_ratio")
    fig.tight_layout()
    out["branch_ratio histogram per source, with the drop threshold"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(sources) + 1.5))
    left = np.zeros(len(sources))
    for v in VERDICTS:
        counts = np.array([sum(1 for src, vv in zip(d["source"], d["verdict"]) if src == s and vv == v) for s in sources])
        if counts.any():
            ax.barh(sources, counts, left=left, label=v)
            left += counts
    ax.legend(fontsize=8)
    ax.set_xlabel("rows")
    out["verdicts per source"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in sources:
        xs = [t for src, t in zip(d["source"], d["n_tokens"]) if src == s]
        ys = [n for src, n in zip(d["source"], d["n_steps"]) if src == s]
        ax.scatter(xs, ys, s=6, alpha=0.6, label=s)
    ax.set_xlabel("tokens (estimated)")
    ax.set_ylabel("steps")
    ax.set_xscale("symlog")
    ax.legend(fontsize=7)
    out["steps against length"] = png_base64(fig)
    return out


def render_html(manifest: dict, figures: dict[str, str]) -> str:
    c = manifest["counts"]
    banner = ("<p class=warn><b>Synthetic input:</b> this run used a generated sample, not real trajectories.</p>"
              if manifest.get("synthetic_input") else "")
    per_source = [[s, v["rows"], v["kept"], v["dropped"], v["verdicts"].get("correct", 0),
                   f"{v['threshold']['score']:.4f}" if v["threshold"] else "-",
                   f"{v['branch_ratio_quantiles'].get('p50', float('nan')):.3f}"]
                  for s, v in manifest["by_source"].items()]
    imgs = images(figures)
    return f"""<!doctype html><html><head><meta charset=utf-8><title>raypipe curation report</title>
{STYLE}</head><body>
<h1>raypipe curation report</h1>{banner}
<p>{c['input']} input rows = {c['kept']} kept + {c['dropped']} dropped + {c['rejected']} rejected
({'balanced' if manifest['balanced'] else 'NOT BALANCED'}). Rule <b>{manifest['policy']['rule']}</b>,
proxy <b>{manifest['policy']['proxy']}</b>, drop {manifest['policy']['drop_top']:.0%} per source;
{html.escape(manifest['rounding'])}.</p>
{table(per_source, ['source', 'rows', 'kept', 'dropped', 'correct', 'threshold', 'median branch_ratio'])}
{imgs}
<h2>Config</h2><pre>{html.escape(json.dumps(manifest['config'], indent=1))}</pre>
<h2>Versions</h2><pre>{html.escape(json.dumps(manifest['versions'], indent=1))}</pre>
</body></html>"""


def write_report(manifest: dict, ranks: pa.Table | None, policy: Policy, uri: str, storage: rio.Storage) -> None:
    figures = plots(ranks, policy) if ranks is not None and ranks.num_rows else {}
    rio.write_text(render_html(manifest, figures), uri, storage)
