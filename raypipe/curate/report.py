"""manifest.json and report.html (with embedded PNG plots) for a curation run, from the merged per-chunk aggregates
(raypipe.curate.aggregates): nothing here reads per-record data."""
from __future__ import annotations

import html
import json
from collections import Counter

import numpy as np

from raypipe.core import io as rio
from raypipe.core.html import STYLE, VERDICT_COLOURS, images, png_base64, pyplot, table
from raypipe.core.lexicon import get_lexicon
from raypipe.core.policy import Policy
from raypipe.core.proxies import PROXIES
from raypipe.core.verify import VERDICTS
from raypipe.core.versions import versions
from raypipe.curate.aggregates import (EXACT_VALUES, FINE_BINS, GROUPS, SAMPLE_PER_SOURCE, branch_ratios,
                                       check_balance, histogram, is_exact, quantile)
from raypipe.curate.examples import example_ids
from raypipe.curate.report_examples import examples_html

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)
APPROXIMATE = f"approximate: from fixed bins of width {1 / FINE_BINS:g} over [0, 1] (error at most one bin)"


def _rows(stat: dict) -> int:
    return stat.get("rows", stat.get("input", 0))  # "input" in markers written before records were counted


def _by_count(counts: dict) -> dict:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _quantiles(d: dict | None) -> dict:
    if not d or not d["n"]:
        return {}
    return {f"p{int(x * 100)}": quantile(d, x) for x in QUANTILES}


def quantile_method(d: dict | None) -> str:
    return "exact" if is_exact(d) else APPROXIMATE


def build_manifest(config, inputs: list[str], stats: list[dict], merged: dict, dedup_summary: dict | None,
                   policy: Policy, seconds: float) -> dict:
    """manifest.json from the phase-1 markers and the merged phase-3 aggregate (no per-record input)."""
    n_rows = sum(_rows(s) for s in stats)
    n_records = sum(s.get("records", _rows(s)) for s in stats)
    n_rejected = sum(s["rejected"] for s in stats)
    sources = merged["sources"]
    kept = sum(a["decisions"].get("keep", 0) for a in sources.values())
    dropped = sum(a["decisions"].get("drop", 0) for a in sources.values())
    per_row: Counter = Counter()
    rejected_by_reason: Counter = Counter()
    for st in stats:
        per_row.update({int(k): n for k, n in st.get("records_per_row", {}).items()})
        rejected_by_reason.update(st.get("rejected_reasons", {}))
        if st["rejected"] and "rejected_reasons" not in st:  # a chunk scored before reasons were counted
            rejected_by_reason["(not counted by reason: scored by an earlier version)"] += st["rejected"]
    by_source: dict[str, dict] = {}
    for s, a in sorted(sources.items()):
        th = policy.thresholds.get(s)
        ratios, unverified = branch_ratios(a, ("correct", "other")), branch_ratios(a, ("unverified",))
        by_source[s] = {
            "records": a["records"],
            "kept": a["decisions"].get("keep", 0),
            "dropped": a["decisions"].get("drop", 0),
            "dropped_by_reason": _by_count(a.get("drop_reasons", {})),
            "verdicts": {v: a["verdicts"].get(v, 0) for v in VERDICTS},
            "graded_from": {k: a["answer_source"].get(k, 0) for k in ("final", "thinking", "none")},
            "empty_thinking": a["empty_thinking"],
            "empty_final": a["empty_final"],
            "unconsumed_text_fields": dict(sorted(a["unconsumed_text"].items(), key=lambda kv: (-kv[1], kv[0]))),
            "duplicates": a["duplicates"],
            "renamed_ids": a["renamed_ids"],
            "threshold": th.model_dump() if th else None,
            "branch_ratio_quantiles": _quantiles(ratios),
            "unverified_branch_ratio_quantiles": _quantiles(unverified),
            "quantiles": {"branch_ratio": quantile_method(ratios), "unverified_branch_ratio": quantile_method(unverified)},
            "examples": example_ids(a.get("examples", {})),
        }
    graded = Counter()
    for v in by_source.values():
        graded.update(v["graded_from"])
    unbalanced = check_balance(stats, merged)
    total_bytes = sum(s.get("bytes", 0) for s in stats)
    return {
        "counts": {"input_rows": n_rows, "records": n_records, "kept": kept, "dropped": dropped,
                   "rejected": n_rejected, "rejected_by_reason": _by_count(rejected_by_reason)},
        "balanced": n_records == kept + dropped + n_rejected and not unbalanced,
        "unbalanced_chunks": unbalanced,
        "records_per_row": {str(k): n for k, n in sorted(per_row.items())},
        "graded_from": dict(graded),
        "by_source": by_source,
        "dedup": dedup_summary or {},
        "config": config.model_dump(mode="json"),
        "config_hash": config.hash(),
        "policy": json.loads(policy.model_dump_json()),
        "versions": versions(config.lexicon, config.grader),
        "inputs": [{"uri": s["uri"], "rows": _rows(s), "records": s.get("records", _rows(s)),
                    "rejected": s["rejected"], "fingerprint": s.get("fingerprint")} for s in stats],
        "synthetic_input": config.synthetic,
        "timing": {"seconds": round(seconds, 3), "response_bytes": total_bytes,
                   "MB_per_s": round(total_bytes / 1e6 / seconds, 3) if seconds else None},
        "rounding": "per source, k = floor(q * n_correct + 0.5) rows dropped (q * n rounded half up)",
        "aggregation": {"quantiles": f"exact (numpy linear) up to {EXACT_VALUES} distinct values per source, "
                                     f"else {APPROXIMATE}",
                        "scatter_sample": f"per source, the {SAMPLE_PER_SOURCE} records with the smallest hash of "
                                          "(source, id)",
                        "examples": "per source and kind, the first few records in the kind's own order (its rank "
                                    "key, then a hash of source and id): raypipe.curate.examples"},
    }


def plots(merged: dict, policy: Policy) -> dict[str, str]:
    plt = pyplot()
    acc = merged["sources"]
    sources = sorted(acc)
    out = {}
    fig, axes = plt.subplots(len(sources), 1, figsize=(7, 2.2 * len(sources)), squeeze=False)
    for ax, s in zip(axes[:, 0], sources):
        every = branch_ratios(acc[s], GROUPS)
        edges = np.linspace(0, max(every["max"] if every else 0, 1e-9), 41)
        width = np.diff(edges)
        ax.bar(edges[:-1], histogram(every, edges), width=width, align="edge", color="#cccccc", label="all rows")
        ax.bar(edges[:-1], histogram(acc[s]["branch_ratio"].get("correct"), edges), width=width, align="edge",
               color=VERDICT_COLOURS["correct"], label="verified correct")
        unverified = acc[s]["branch_ratio"].get("unverified")
        if unverified:  # no reference answer: never ranked, shown apart
            ax.stairs(histogram(unverified, edges), edges, color=VERDICT_COLOURS["unverified"], linewidth=1.5,
                      label="unverified")
        th = policy.thresholds.get(s)
        if th is not None and policy.rule == "top" and PROXIES.get(policy.proxy).label == "branch_ratio":
            ax.axvline(th.score, color="#cc3311", linestyle="--", label=f"drop >= {th.score:.3f}")
        ax.legend(fontsize=8)
        ax.set_title(s if is_exact(every) else f"{s} (binned to {1 / FINE_BINS:g})", fontsize=9)
        ax.set_xlabel("branch_ratio")
    fig.tight_layout()
    out["branch_ratio histogram per source, with the drop threshold"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(sources) + 1.5))
    left = np.zeros(len(sources))
    for v in VERDICTS:
        counts = np.array([acc[s]["verdicts"].get(v, 0) for s in sources])
        if counts.any():
            ax.barh(sources, counts, left=left, label=v, color=VERDICT_COLOURS[v])
            left += counts
    ax.legend(fontsize=8)
    ax.set_xlabel("rows")
    out["verdicts per source"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    sampled, empty = False, 0
    for s in sources:
        rows = acc[s]["sample"]
        sampled |= len(rows) < acc[s]["records"]
        shown = [r for r in rows if r[1] > 0]  # an empty response has no place on a log axis: counted in the title
        empty += len(rows) - len(shown)
        ax.scatter([r[1] for r in shown], [r[2] for r in shown], s=6, alpha=0.6, label=s)
    ax.set_xlabel("tokens (estimated)")
    ax.set_ylabel("steps")
    log_axis(ax.xaxis, ax.set_xscale)
    ax.legend(fontsize=7)
    title = "steps against length"
    if sampled:
        title += f" (a deterministic sample: per source the {SAMPLE_PER_SOURCE} records with the smallest hash of id)"
    if empty:
        title += f"; {empty} records with an empty response not shown"
    out[title] = png_base64(fig)
    return out


def log_axis(axis, set_scale) -> None:
    """A log axis that reads at any span: ticks at 1, 2 and 5 times each power of ten (every multiple when the data
    span less than a decade and a half), labelled as short plain numbers (500, 2k, 20k)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    lo, hi = axis.get_view_interval()
    narrow = lo > 0 and np.log10(hi / lo) < 1.5
    axis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10)) if narrow else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def reasons_html(manifest: dict) -> str:
    """Dropped rows per source by the kind of their reason, and rejected rows by theirs."""
    sources = manifest["by_source"]
    totals: Counter = Counter()
    for v in sources.values():
        totals.update(v.get("dropped_by_reason", {}))
    kinds = sorted(totals, key=lambda k: (not k.startswith("rule:"), -totals[k], k))
    rows = [[s, v["dropped"], *(v.get("dropped_by_reason", {}).get(k, "-") for k in kinds)] for s, v in sources.items()]
    out = ("<h2>Why rows were dropped or rejected</h2><p>Each dropped row counted once, under the first rule of the "
           f"decision chain that settled it ({html.escape(' → '.join(manifest.get('decision_rules', [])))}).</p>"
           + table(rows, ["source", "dropped", *kinds]))
    rejected = manifest["counts"].get("rejected_by_reason", {})
    if manifest["counts"]["rejected"]:
        out += (f"<p>{manifest['counts']['rejected']} rejected (rows or records that could not be read; in "
                "<code>rejects/</code> with the raw input):</p>"
                + table([[k, n] for k, n in rejected.items()], ["reason (numbers as N)", "rejected"]))
    else:
        out += "<p>No row was rejected.</p>"
    return out


def suspect_table(manifest: dict) -> str:
    """The audit of the references (raypipe.curate.audit): the problems whose reference agreeing answers contradict,
    each with the opening of its problem and example row ids."""
    audit = manifest.get("suspect_reference") or {}
    if not audit.get("problems"):
        return ""
    kept_out = {tuple(x) for x in audit.get("kept_out", [])}
    rows = [[p["problem_id"], p.get("problem", ""), p["reference"], " = ".join(p["spellings"]), p["rows"],
             p["correct_rows"], ", ".join(f"{s} ({n})" for s, n in p["sources"].items()),
             ", ".join(f"{e['source']}: {e['id']}" for e in p.get("examples", [])),
             "kept out" if (p["problem_id"], p["reference"]) in kept_out else "flagged"] for p in audit["problems"]]
    return (f"<h2>Suspect references</h2><p>{len(rows)} problems whose reference answer is contradicted by agreeing "
            "answers (verified equal to each other, from two sources or "
            f"{audit.get('min_samples')} rows, more than give the reference). Kept out: their rows are dropped with "
            "reason <code>suspect_reference</code>; flagged: decided as usual. Nothing is re-labelled.</p>"
            + table(rows, ["problem_id", "problem", "reference", "agreed answer (spellings)", "rows agreeing",
                           "rows correct", "sources (rows)", "examples (source: id)", "action"]))


def render_html(manifest: dict, figures: dict[str, str], examples: str = "") -> str:
    c = manifest["counts"]
    banner = ("<p class=warn><b>Synthetic input:</b> this run used a generated sample, not real trajectories.</p>"
              if manifest.get("synthetic_input") else "")
    sources = manifest["by_source"].items()
    per_source = [[s, v["records"], v["kept"], v["dropped"], v["verdicts"].get("correct", 0),
                   v["verdicts"].get("unverified", 0), f"{v['threshold']['score']:.4f}" if v["threshold"] else "-",
                   ("" if v["quantiles"]["branch_ratio"] == "exact" else "~")
                   + f"{v['branch_ratio_quantiles'].get('p50', float('nan')):.3f}"] for s, v in sources]
    approx = [s for s, v in sources if any(m != "exact" for m in v["quantiles"].values())]
    notes = (f"<p>Quantiles marked ~ ({', '.join(map(html.escape, approx))}) are {html.escape(APPROXIMATE)}.</p>"
             if approx else "")
    if manifest.get("unbalanced_chunks"):
        notes += ("<p class=warn><b>Counts do not balance in:</b> "
                  + html.escape(", ".join(str(c["chunk"]) for c in manifest["unbalanced_chunks"])) + "</p>")
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
{notes}{suspect_table(manifest)}
{"<p><a href='#examples'>Examples</a>: kept and dropped records, their steps and markers.</p>" if examples else ""}
{reasons_html(manifest)}
<h2>What was read</h2>
<p>Where graded answers came from, parts that were empty, text in fields the format did not read, and duplicates
(exact copies dropped; records sharing an id renamed id#k).</p>
{table(reading, ['source', 'answer from final', 'answer from reasoning', 'empty reasoning', 'empty final',
                 'unread text fields (records)', 'duplicates', 'renamed ids'])}
{images(figures)}
{examples}
<h2>Config</h2><pre>{html.escape(json.dumps(manifest['config'], indent=1))}</pre>
<h2>Versions</h2><pre>{html.escape(json.dumps(manifest['versions'], indent=1))}</pre>
</body></html>"""


def write_report(manifest: dict, merged: dict, policy: Policy, uri: str, storage: rio.Storage) -> None:
    figures = plots(merged, policy) if merged["sources"] else {}
    config = manifest["config"]
    examples = examples_html({s: a.get("examples", {}) for s, a in merged["sources"].items()},
                             get_lexicon(config["lexicon"]), config["segmenter"], config["output"])
    rio.write_text(render_html(manifest, figures, examples), uri, storage)
