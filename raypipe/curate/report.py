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
from raypipe.core.verify import UNVERIFIED, VERDICTS
from raypipe.core.versions import versions

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def _rows(stat: dict) -> int:
    return stat.get("rows", stat.get("input", 0))  # "input" in markers written before records were counted


def source_accounts(ranks: pa.Table) -> dict[str, dict]:
    """Per source, what was read and how: verdicts, where answers came from, empty parts, unread text fields,
    duplicates and renamed ids, branch_ratio quantiles (verified-correct rows and unverified rows apart)."""
    cols = ranks.select(["source", "verdict", "branch_ratio", "answer_source", "n_steps", "final_chars",
                         "unconsumed_text", "duplicate_of", "input_id"]).to_pydict()
    acc: dict = defaultdict(lambda: {"verdicts": Counter(), "answer_source": Counter(), "unconsumed_text": Counter(),
                                     "empty_thinking": 0, "empty_final": 0, "duplicates": 0, "renamed_ids": 0,
                                     "ratios": [], "unverified_ratios": []})
    for i, s in enumerate(cols["source"]):
        a = acc[s]
        a["verdicts"][cols["verdict"][i]] += 1
        a["answer_source"][(cols["answer_source"][i] or "none").split(":")[0]] += 1
        a["empty_thinking"] += not cols["n_steps"][i]
        a["empty_final"] += not cols["final_chars"][i]
        a["duplicates"] += cols["duplicate_of"][i] is not None
        a["renamed_ids"] += cols["input_id"][i] is not None
        a["unconsumed_text"].update(f for f in (cols["unconsumed_text"][i] or "").split(",") if f)
        if cols["branch_ratio"][i] is not None:
            a["unverified_ratios" if cols["verdict"][i] == UNVERIFIED else "ratios"].append(cols["branch_ratio"][i])
    return acc


def _quantiles(values: list[float]) -> dict:
    q = np.quantile(values, QUANTILES).tolist() if values else []
    return dict(zip([f"p{int(x * 100)}" for x in QUANTILES], q))


def build_manifest(config, inputs: list[str], stats: list[dict], ranks: pa.Table | None, fixes: pa.Table | None,
                   policy: Policy, decisions: Counter, seconds: float) -> dict:
    n_rows = sum(_rows(s) for s in stats)
    n_records = sum(s.get("records", _rows(s)) for s in stats)
    n_rejected = sum(s["rejected"] for s in stats)
    kept = sum(n for (_, d), n in decisions.items() if d == "keep")
    dropped = sum(n for (_, d), n in decisions.items() if d == "drop")
    per_row: Counter = Counter()
    for st in stats:
        per_row.update({int(k): n for k, n in st.get("records_per_row", {}).items()})
    by_source: dict[str, dict] = {}
    if ranks is not None and ranks.num_rows:
        for s, a in sorted(source_accounts(ranks).items()):
            th = policy.thresholds.get(s)
            by_source[s] = {
                "records": sum(a["verdicts"].values()),
                "kept": decisions.get((s, "keep"), 0),
                "dropped": decisions.get((s, "drop"), 0),
                "verdicts": {v: a["verdicts"].get(v, 0) for v in VERDICTS},
                "graded_from": {k: a["answer_source"].get(k, 0) for k in ("final", "thinking", "none")},
                "empty_thinking": a["empty_thinking"],
                "empty_final": a["empty_final"],
                "unconsumed_text_fields": dict(a["unconsumed_text"].most_common()),
                "duplicates": a["duplicates"],
                "renamed_ids": a["renamed_ids"],
                "threshold": th.model_dump() if th else None,
                "branch_ratio_quantiles": _quantiles(a["ratios"]),
                "unverified_branch_ratio_quantiles": _quantiles(a["unverified_ratios"]),
            }
    graded = Counter()
    for v in by_source.values():
        graded.update(v["graded_from"])
    total_bytes = sum(s.get("bytes", 0) for s in stats)
    return {
        "counts": {"input_rows": n_rows, "records": n_records, "kept": kept, "dropped": dropped,
                   "rejected": n_rejected},
        "balanced": n_records == kept + dropped + n_rejected,
        "records_per_row": {str(k): n for k, n in sorted(per_row.items())},
        "graded_from": dict(graded),
        "by_source": by_source,
        "config": config.model_dump(mode="json"),
        "config_hash": config.hash(),
        "policy": json.loads(policy.model_dump_json()),
        "versions": versions(config.lexicon, config.grader),
        "inputs": [{"uri": s["uri"], "rows": _rows(s), "records": s.get("records", _rows(s)),
                    "rejected": s["rejected"]} for s in stats],
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
        unverified = [r for r, v in rows if v == UNVERIFIED]
        if unverified:  # no reference answer: never ranked, shown apart
            ax.hist(unverified, bins=bins, histtype="step", color="#228833", linewidth=1.5, label="unverified")
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
    sources = manifest["by_source"].items()
    per_source = [[s, v["records"], v["kept"], v["dropped"], v["verdicts"].get("correct", 0),
                   v["verdicts"].get("unverified", 0), f"{v['threshold']['score']:.4f}" if v["threshold"] else "-",
                   f"{v['branch_ratio_quantiles'].get('p50', float('nan')):.3f}"] for s, v in sources]
    reading = [[s, v["graded_from"]["final"], v["graded_from"]["thinking"], v["empty_thinking"], v["empty_final"],
                ", ".join(f"{f} ({n})" for f, n in v["unconsumed_text_fields"].items()) or "-", v["duplicates"],
                v["renamed_ids"]] for s, v in sources]
    per_row = ", ".join(f"{n} rows gave {k}" for k, n in manifest["records_per_row"].items())
    return f"""<!doctype html><html><head><meta charset=utf-8><title>raypipe curation report</title>
{STYLE}</head><body>
<h1>raypipe curation report</h1>{banner}
<p>{c['input_rows']} input rows gave {c['records']} records ({per_row}) = {c['kept']} kept + {c['dropped']} dropped
+ {c['rejected']} rejected ({'balanced' if manifest['balanced'] else 'NOT BALANCED'}). Rule
<b>{manifest['policy']['rule']}</b>, proxy <b>{manifest['policy']['proxy']}</b>, drop
{manifest['policy']['drop_top']:.0%} per source; {html.escape(manifest['rounding'])}.</p>
{table(per_source, ['source', 'records', 'kept', 'dropped', 'correct', 'unverified', 'threshold',
                    'median branch_ratio (correct and others, unverified apart)'])}
<h2>What was read</h2>
<p>Where graded answers came from, parts that were empty, text in fields the format did not read, and duplicates
(exact copies dropped; records sharing an id renamed id#k).</p>
{table(reading, ['source', 'answer from final', 'answer from reasoning', 'empty reasoning', 'empty final',
                 'unread text fields (records)', 'duplicates', 'renamed ids'])}
{images(figures)}
<h2>Config</h2><pre>{html.escape(json.dumps(manifest['config'], indent=1))}</pre>
<h2>Versions</h2><pre>{html.escape(json.dumps(manifest['versions'], indent=1))}</pre>
</body></html>"""


def write_report(manifest: dict, ranks: pa.Table | None, policy: Policy, uri: str, storage: rio.Storage) -> None:
    figures = plots(ranks, policy) if ranks is not None and ranks.num_rows else {}
    rio.write_text(render_html(manifest, figures), uri, storage)
