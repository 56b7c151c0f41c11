"""Shared pieces of raypipe's HTML reports: a page, tables, numbers, and matplotlib figures as embedded PNGs."""
from __future__ import annotations

import base64
import html
import io

STYLE = ("<style>body{font-family:sans-serif;max-width:64em;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.2em .6em}.ok{color:#137333}.no{color:#b3261e}"
         ".warn{background:#fee;padding:.5em}</style>")

# One colour per verdict, in every plot and badge: correct green, wrong red, no answer orange, the grader's own
# failures grey and purple, unverified (no reference) blue.
VERDICT_COLOURS = {"correct": "#228833", "wrong": "#cc3311", "no_answer": "#ee7733",
                   "unparseable_reference": "#aa3377", "timeout": "#999999", "error": "#555555",
                   "unverified": "#4477aa"}


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def images(figures: dict[str, str]) -> str:
    """Titled embedded PNGs from {title: base64 PNG}."""
    return "".join(f"<h3>{html.escape(t)}</h3><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'>"
                   for t, b in figures.items())


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>{STYLE}</head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")


def fmt(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.1%}" if pct else f"{x:.3f}"
    return str(x)
