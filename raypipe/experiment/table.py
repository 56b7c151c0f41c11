"""The experiment's results table, shaped like the paper's: one row per arm, accuracy per benchmark, the average,
plus what curation kept and the SFT loss, with links to every stage's report. Written as JSON, CSV, Markdown, HTML."""
from __future__ import annotations

import csv
import html
import io as _io
import json

from raypipe.core import io

LINKS = {"curation": "curate/report.html", "sft": "sft/train_summary.json", "eval": "eval/report.html"}


def _json(uri: str, storage: io.Storage) -> dict | None:
    text = io.read_text(uri, storage)
    return json.loads(text) if text is not None else None


def collect(cfg, storage: io.Storage) -> dict:
    """Rows from the arms' outputs on disk; a stage that has not finished leaves its cells empty."""
    from raypipe.eval.benchmarks import REGISTRY

    rows = []
    for arm in cfg.arms:
        root = io.join(cfg.output, "arms", arm)
        manifest = _json(io.join(root, "curate", "manifest.json"), storage)
        summary = _json(io.join(root, "sft", "train_summary.json"), storage)
        results = _json(io.join(root, "eval", "results.json"), storage)
        metrics = (results or {}).get("metrics", {})
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
            "links": {k: f"arms/{arm}/{v}" for k, v in LINKS.items()
                      if io.exists(io.join(root, *v.split("/")), storage)},
        })
    titles = {b: REGISTRY[b].title if b in REGISTRY else b for b in cfg.benchmarks}
    return {"name": cfg.name, "model": cfg.model, "metric": "avg@n", "benchmarks": cfg.benchmarks,
            "titles": titles, "rows": rows}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _cells(table: dict, row: dict) -> list[str]:
    loss = row["final_loss"]
    return ([row["arm"]] + [_pct(row["accuracy"][b]) for b in table["benchmarks"]] + [_pct(row["average"])]
            + [str(row["train_rows"] if row["train_rows"] is not None else "-"),
               "-" if loss is None else f"{loss:.4f}"])


def _head(table: dict) -> list[str]:
    return ["arm"] + [table["titles"][b] for b in table["benchmarks"]] + ["Avg.", "curated rows", "final loss"]


def to_markdown(table: dict) -> str:
    head = _head(table)
    lines = [f"{table['name']} — {table['metric']} (%), base model {table['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table["rows"]]
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", *table["benchmarks"], "average", "train_rows", "dropped", "final_loss"])
    for r in table["rows"]:
        w.writerow([r["arm"], *[r["accuracy"][b] for b in table["benchmarks"]], r["average"], r["train_rows"],
                    r["dropped"], r["final_loss"]])
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
            f"<table><tr>{head}</tr>{body}</table>")


def write_results(cfg, storage: io.Storage) -> dict:
    table = collect(cfg, storage)
    io.write_text(json.dumps(table, indent=1), io.join(cfg.output, "results.json"), storage)
    io.write_text(to_csv(table), io.join(cfg.output, "results.csv"), storage)
    io.write_text(to_markdown(table), io.join(cfg.output, "results.md"), storage)
    io.write_text(to_html(table), io.join(cfg.output, "results.html"), storage)
    print(to_markdown(table), flush=True)
    return table
