"""The experiment's results table, shaped like the paper's: one row per arm, accuracy per benchmark, the average,
plus what curation kept and the SFT loss, with links to every stage's report. Written as JSON, CSV, Markdown, HTML."""
from __future__ import annotations

import csv
import html
import io as _io
import json

from raypipe.core import io

LINKS = {"curation": "curate/report.html", "manifest": "curate/manifest.json", "sft": "sft/train_summary.json",
         "eval": "eval/report.html", "samples": "eval/results.json"}


def _json(uri: str, storage: io.Storage) -> dict | None:
    text = io.read_text(uri, storage)
    return json.loads(text) if text is not None else None


def trained_tokens(output: str, storage: io.Storage) -> int | None:
    """Supervised tokens the SFT run trained on, summed over its steps (metrics.jsonl)."""
    text = io.read_text(io.join(output, "metrics.jsonl"), storage)
    steps = {}
    for line in (text or "").splitlines():
        m = json.loads(line)
        steps[m["step"]] = m.get("target_tokens")  # a resumed run rewrites its later steps: the last one counts
    values = [v for v in steps.values() if v is not None]
    return int(sum(values)) if values else None


def collect(cfg, storage: io.Storage, plan: dict | None = None) -> dict:
    """Rows from the arms' outputs on disk; a stage that has not finished leaves its cells empty."""
    from raypipe.eval.benchmarks import REGISTRY
    from raypipe.experiment.budget import read_budget
    from raypipe.experiment.config import DROP_ARMS
    from raypipe.experiment.drops import dropped_ids, overlaps

    budget = read_budget(cfg) or {}
    pairing = _json(io.join(cfg.output, "paired", "pairing.json"), storage)
    prompts = {}

    rows = []
    for arm in cfg.arms:
        root = io.join(cfg.output, "arms", arm)
        manifest = _json(io.join(root, "curate", "manifest.json"), storage)
        summary = _json(io.join(root, "sft", "train_summary.json"), storage)
        results = _json(io.join(root, "eval", "results.json"), storage)
        metrics = (results or {}).get("metrics", {})
        matched = (budget.get("arms") or {}).get(arm) or {}
        for stamp in ((summary or {}).get("prompt_template"), (results or {}).get("stamp", {}).get("prompt_template")):
            if stamp:
                prompts.setdefault(stamp.get("example_user_turn"), set()).add(stamp.get("version"))
        acc = {b: (metrics.get(b) or {}).get("avg@n") for b in cfg.benchmarks}
        done = [v for v in acc.values() if v is not None]
        rows.append({
            "arm": arm,
            "accuracy": acc,
            "average": sum(done) / len(done) if done and len(done) == len(acc) else None,
            "n": {b: (metrics.get(b) or {}).get("n") for b in cfg.benchmarks},
            "train_rows": (manifest or {}).get("counts", {}).get("kept"),
            "dropped": (manifest or {}).get("counts", {}).get("dropped"),
            "final_loss": (summary or {}).get("final_loss"),
            "steps": (summary or {}).get("steps"),
            "budget_rows": matched.get("rows"), "supervised_tokens": matched.get("supervised_tokens"),
            "trained_tokens": trained_tokens(io.join(root, "sft"), storage) if summary else None,
            "overlong_before": matched.get("overlong_before"), "overlong_after": matched.get("overlong_after"),
            "links": {k: f"arms/{arm}/{v}" for k, v in LINKS.items()
                      if io.exists(io.join(root, *v.split("/")), storage)},
        })
    titles = {b: REGISTRY[b].title if b in REGISTRY else b for b in cfg.benchmarks}
    drops = {a: dropped_ids(io.join(cfg.output, "arms", a, "curate"), storage) for a in cfg.arms if a in DROP_ARMS}
    paired = (f"paired by {pairing['key']}: {pairing['paired']} problems of {pairing['union']} (every source "
              f"verified correct; {pairing['overlap']} in both)" if pairing else
              "not paired (each arm reads its whole source)" if cfg.pair_by == "none" else "pairing not finished")
    return {"name": cfg.name, "model": cfg.model, "metric": "avg@n", "judge": judge_summaries(cfg.output, storage), "benchmarks": cfg.benchmarks,
            "titles": titles, "rows": rows, "pairing": paired, "budget": {k: budget.get(k) for k in (
                "mode", "max_len", "overlong", "p99_length", "warning", "common_steps", "supervised_tokens_spread")},
            "drop_overlap": overlaps(drops), "prompt": {"same_in_training_and_evaluation": len(prompts) <= 1,
                                                        "versions": sorted({v for vs in prompts.values() for v in vs})},
            "plan": plan, "links": {k: v for k, v in (("pairing", "paired/pairing.json"), ("budget", "budget/budget.json"),
                                                      ("judge A", "judge/A/report.html"),
                                                      ("judge B", "judge/B/report.html"))
                                    if io.exists(io.join(cfg.output, *v.split("/")), storage)}}


JUDGE_FIGURES = ("trajectories", "steps", "propose_share", "p_propose_propose", "unlabelled_rate",
                 "request_failure_rate")


def judge_summaries(output: str, storage: io.Storage) -> dict[str, dict]:
    """Per experiment source (A, B) judged: the judge and, per data source in it, the step-label figures."""
    out = {}
    for name in ("A", "B"):
        summary = _json(io.join(output, "judge", name, "summary.json"), storage)
        if summary:
            out[name] = {"judge": summary["judge"], "sources": {
                s: {k: v.get(k) for k in JUDGE_FIGURES} for s, v in summary["sources"].items()}}
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _v(x) -> str:
    return "-" if x is None else str(x)


def _cells(table: dict, row: dict) -> list[str]:
    loss = row["final_loss"]
    over = f"{_v(row['overlong_before'])} / {_v(row['overlong_after'])}"
    return ([row["arm"]] + [_pct(row["accuracy"][b]) for b in table["benchmarks"]] + [_pct(row["average"])]
            + [_v(row["train_rows"]), _v(row["budget_rows"]), _v(row["supervised_tokens"]), _v(row["trained_tokens"]),
               _v(row["steps"]), over, "-" if loss is None else f"{loss:.4f}"])


def _head(table: dict) -> list[str]:
    return (["arm"] + [table["titles"][b] for b in table["benchmarks"]]
            + ["Avg.", "curated rows", "rows trained", "supervised tokens", "tokens trained", "steps",
               "over-long before / after", "final loss"])


def notes(table: dict) -> list[str]:
    """The lines beside the table: pairing, budget, p99 warning, prompt, drop overlaps, cost."""
    b = table["budget"]
    spread = b.get("supervised_tokens_spread")
    spread = "-" if spread is None else f"{100 * spread:.2f} %"
    trained = [r["trained_tokens"] for r in table["rows"] if r.get("trained_tokens")]
    trained_spread = (max(trained) - min(trained)) / min(trained) if len(trained) > 1 else None
    out = [f"Data: {table['pairing']}.",
           f"Budget: {b.get('mode') or '-'} (same optimizer steps: {b.get('common_steps')}; supervised tokens spread "
           f"between arms {spread} in the data, "
           f"{'-' if trained_spread is None else f'{100 * trained_spread:.2f} %'} as trained); max_len "
           f"{b.get('max_len')}, p99 length of the paired data {b.get('p99_length')}."]
    if b.get("mode") == "tokens" and trained_spread is not None and trained_spread > 0.01:
        out.append("NOTE: the arms trained on supervised tokens more than 1 % apart: the common step count (the "
                   "smallest arm's, or train.max_steps) cut the larger samples, or packing filled their steps "
                   "unequally.")
    if b.get("warning"):
        out.append(f"WARNING: {b['warning']}.")
    p = table["prompt"]
    out.append(f"Prompt: {', '.join(p['versions']) or '-'}; the same in training and evaluation: "
               f"{p['same_in_training_and_evaluation']}.")
    d = table["drop_overlap"]
    if d["jaccard"]:
        out.append("Rows dropped by each filter: " + ", ".join(f"{a} {n}" for a, n in d["dropped"].items())
                   + ". Jaccard overlap: " + "; ".join(f"{a} ~ {c}: {'-' if j is None else f'{j:.2f}'}"
                                                     for a, c, j in d["jaccard"]) + ".")
    for name, j in (table.get("judge") or {}).items():
        for source, f in j["sources"].items():
            out.append(f"Step judge ({j['judge']}) of source {name} ({source}): {f['trajectories']} trajectories, "
                       f"{f['steps']} steps; Propose share {_pct(f['propose_share'])} %, P(Propose -> Propose) "
                       f"{'-' if f['p_propose_propose'] is None else format(f['p_propose_propose'], '.2f')}, "
                       f"unlabelled {_pct(f['unlabelled_rate'])} %.")
    if table.get("plan"):
        out.append(f"Estimated cost: {table['plan']['gpu_hours']:.2f} GPU-hours (upper bound "
                   f"{table['plan']['gpu_hours_upper']:.2f}) at MFU {table['plan']['cost']['mfu']}.")
    return out


def to_markdown(table: dict) -> str:
    head = _head(table)
    lines = [f"{table['name']} — {table['metric']} (%), base model {table['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table["rows"]]
    return "\n".join(lines + [""] + notes(table)) + "\n"


def to_csv(table: dict) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf)
    extra = ["train_rows", "dropped", "budget_rows", "supervised_tokens", "trained_tokens", "steps",
             "overlong_before", "overlong_after", "final_loss"]
    w.writerow(["arm", *table["benchmarks"], "average", *extra])
    for r in table["rows"]:
        w.writerow([r["arm"], *[r["accuracy"][b] for b in table["benchmarks"]], r["average"], *[r[k] for k in extra]])
    return buf.getvalue()


def to_html(table: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _head(table) + ["reports"])
    body = ""
    for r in table["rows"]:
        links = " · ".join(f"<a href='{html.escape(u)}'>{html.escape(k)}</a>" for k, u in r["links"].items())
        body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(table, r)) + f"<td>{links}</td></tr>"
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(table['name'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
            "text-align:right}td:first-child,th:first-child{text-align:left}</style>"
            f"<h1>{html.escape(table['name'])}</h1><p>{html.escape(table['metric'])} (%) per benchmark and their "
            f"mean; base model <code>{html.escape(table['model'])}</code>. One row per arm.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in notes(table))
            + "<p>" + " · ".join(f"<a href='{html.escape(u)}'>{html.escape(k)}</a>" for k, u in table["links"].items())
            + "</p>")


def write_results(cfg, storage: io.Storage, plan: dict | None = None) -> dict:
    table = collect(cfg, storage, plan)
    io.write_text(json.dumps(table, indent=1), io.join(cfg.output, "results.json"), storage)
    io.write_text(to_csv(table), io.join(cfg.output, "results.csv"), storage)
    io.write_text(to_markdown(table), io.join(cfg.output, "results.md"), storage)
    io.write_text(to_html(table), io.join(cfg.output, "results.html"), storage)
    print(to_markdown(table), flush=True)
    return table
