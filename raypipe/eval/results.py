"""results.json, report.html (per-benchmark table and plots) and the paper-style comparison of runs."""
from __future__ import annotations

import html
import json

from raypipe.core import io as rio
from raypipe.core.html import images, page, png_base64, pyplot
from raypipe.core.html import table as html_table
from raypipe.eval import metrics as mx
from raypipe.eval.benchmarks import REGISTRY
from raypipe.eval.stamp import build_stamp


def write_results(config, loaded: dict, per: dict, samples: list[dict], info: dict, scorer_versions: dict,
                  run: dict, storage: rio.Storage) -> dict:
    datasets = {n: {"source": b.source, "sha256": b.sha256, "problems": len(b.problems),
                    "size_expected": b.spec.size, "hf_id": b.spec.hf_id} for n, b in loaded.items()}
    results = {
        "metrics": {**per, "overall": mx.overall(per)},
        "samples": samples,
        "stamp": build_stamp(config, info, datasets, scorer_versions),
        "run": run,
        "config": config.model_dump(),
    }
    rio.write_text(json.dumps(results, ensure_ascii=False, indent=1), rio.join(config.output, "results.json"), storage)
    rio.write_text(render_report(results), rio.join(config.output, "report.html"), storage)
    return results


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x, fmt=".3f") -> str:
    return "-" if x is None else format(x, fmt)


def plots(results: dict) -> dict[str, str]:
    plt = pyplot()
    per = {k: v for k, v in results["metrics"].items() if k != "overall" and v.get("problems")}
    out = {}
    if not per:
        return out
    names = list(per)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(names, [100 * per[n]["avg@n"] for n in names], color="#4477aa", label="avg@n")
    ax.plot(names, [100 * per[n]["maj@n"] for n in names], "o", color="#cc3311", label="maj@n")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    out["accuracy per benchmark"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    for n in names:
        ks = sorted(per[n]["pass@k"], key=int)
        ax.plot([int(k) for k in ks], [100 * per[n]["pass@k"][k] for k in ks], marker="o", label=n)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.legend(fontsize=7)
    out["pass@k"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    for n in names:
        vals = [s["branch_ratio"] for s in results["samples"] if s["benchmark"] == n and s.get("branch_ratio") is not None]
        if vals:
            ax.hist(vals, bins=30, alpha=0.5, label=n)
    ax.set_xlabel("branch_ratio of the model's outputs")
    ax.legend(fontsize=7)
    out["branch_ratio of the outputs"] = png_base64(fig)
    return out


def render_report(results: dict) -> str:
    m = results["metrics"]
    rows = []
    for name, v in m.items():
        if name == "overall" or not v.get("problems"):
            continue
        b = v["branch"]
        rows.append([REGISTRY[name].title, v["problems"], v["n"], _pct(v["avg@n"]), _pct(v["pass@k"]["1"]),
                     _pct(v["pass@k"][str(max(map(int, v["pass@k"])))]), _pct(v["maj@n"]),
                     _num(b.get("mean_steps"), ".1f"), _num(b.get("mean_branch_ratio")), _pct(b.get("unfinished_rate")),
                     _pct(b.get("no_answer_rate")), v["generation_errors"]])
    o = m["overall"]
    rows.append(["Average", "", "", _pct(o.get("avg@n")), _pct(o.get("pass@1")), "", _pct(o.get("maj@n")), "",
                 _num(o.get("mean_branch_ratio")), "", "", ""])
    head = ["benchmark", "problems", "n", "avg@n", "pass@1", "pass@n", "maj@n", "steps", "branch_ratio",
            "unfinished %", "no answer %", "gen. errors"]
    st = results["stamp"]
    model = html.escape(str((st.get("model") or {}).get("path")))
    engine = f"{html.escape(str(st['engine'].get('engine')))} {html.escape(str(st['engine'].get('version', '')))}"
    return page("raypipe evaluation report", f"""<p>Model <b>{model}</b>, engine {engine}; accuracies in %.</p>
{html_table(rows, head)}
{images(plots(results))}
<h2>Stamp</h2><pre>{html.escape(json.dumps(st, indent=1))}</pre>
<h2>Run</h2><pre>{html.escape(json.dumps(results.get('run', {}), indent=1))}</pre>""")


def load_results(run: str, storage: rio.Storage) -> dict:
    uri = run if run.endswith(".json") else rio.join(run, "results.json")
    text = rio.read_text(uri, storage)
    if text is None:
        raise FileNotFoundError(f"no results.json at {uri}")
    return json.loads(text)


def compare_table(runs: list[tuple[str, dict]], metric: str = "avg@n") -> str:
    """The paper's side-by-side table: one row per run, one column per benchmark, then the average."""
    names: list[str] = []
    for _, r in runs:
        names += [n for n in r["metrics"] if n != "overall" and n not in names]

    def value(r: dict, n: str):
        v = r["metrics"].get(n)
        if not v or not v.get("problems"):
            return None
        return v["pass@k"].get("1") if metric == "pass@1" else v.get(metric)

    head = ["run"] + [REGISTRY[n].title if n in REGISTRY else n for n in names] + ["Avg."]
    rows, first = [], None
    for label, r in runs:
        vals = [value(r, n) for n in names]
        avg = sum(vals) / len(vals) if vals and None not in vals else None
        rows.append([label] + vals + [avg])
        first = first or rows[-1]
    if len(rows) > 1:
        for row in rows[1:]:
            rows.append([f"Δ {row[0]}"] + [None if a is None or b is None else a - b for a, b in zip(row[1:], first[1:])])
    width = max(len(h) for h in head + [str(r[0]) for r in rows]) + 2

    def fmt(x, delta: bool) -> str:
        return "-" if x is None else f"{100 * x:+.1f}" if delta else f"{100 * x:.1f}"

    lines = [f"{metric} (%)", "".join(h.ljust(width) for h in head)]
    for row in rows:
        delta = str(row[0]).startswith("Δ")
        lines.append("".join(c.ljust(width) for c in [str(row[0])] + [fmt(x, delta) for x in row[1:]]))
    return "\n".join(lines)
