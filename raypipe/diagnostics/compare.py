"""Two sources side by side, next to the paper's reported figures (arXiv 2604.01702): does the data show the
same pattern? Source A plays DeepSeek-R1 (divergent), source B gpt-oss-120b (convergent)."""
from __future__ import annotations

import html
import json

from raypipe.core import io
from raypipe.core.html import fmt, page
from raypipe.core.html import table as html_table

# (metric label, summary kind, key, paper R1, paper gpt-oss, expected sign of A - B, as a percentage)
METRICS = [
    ("mean token loss (nats)", "loss", "mean_loss", "0.2–0.3", "0.6", -1, False),
    ("key-token loss (nats)", "loss", "key_token_loss", "1.53", "1.78", -1, False),
    ("routine-token share", "loss", "routine_share", "higher (a flood of near-zero-loss tokens)", "lower", 1, True),
    ("branch-marker token loss", "loss", "marker_loss", "not reported", "not reported", 0, False),
    ("mean entropy", "loss", "mean_entropy", "not reported", "not reported", 0, False),
    ("Propose share of steps", "judge", "propose_share", "33.3 %", "22.5 %", 1, True),
    ("P(Propose → Propose)", "judge", "p_propose_propose", "0.53", "0.34", 1, False),
    ("judge: unlabelled steps", "judge", "unlabelled_rate", "-", "-", 0, True),
]


def load_summaries(uris: list[str], storage: io.Storage) -> dict[str, dict]:
    """source -> its per-source summary, across one or more summary.json folders (later ones win)."""
    out: dict[str, dict] = {}
    for uri in uris:
        text = io.read_text(io.join(uri, "summary.json"), storage)
        if text is None:
            raise FileNotFoundError(f"no summary.json in {uri}")
        out.update(json.loads(text)["sources"])
    return out


def compare_rows(a: str, b: str, loss: dict[str, dict], judge: dict[str, dict]) -> list[dict]:
    rows = []
    for label, kind, key, pr1, pgpt, sign, pct in METRICS:
        src = loss if kind == "loss" else judge
        va, vb = (src.get(a) or {}).get(key), (src.get(b) or {}).get(key)
        same = None
        if sign and va is not None and vb is not None:
            same = (va - vb) * sign > 0
        rows.append({"metric": label, "a": va, "b": vb, "paper_r1": pr1, "paper_gpt_oss": pgpt, "same": same,
                     "pct": pct})
    return rows


def compare_html(a: str, b: str, rows: list[dict], loss_uris: list[str], judge_uris: list[str]) -> str:
    mark = {True: "<span class=ok>✓ same direction</span>", False: "<span class=no>✗ opposite</span>", None: "-"}
    head = ["metric", f"A: {a}", f"B: {b}", "paper: DeepSeek-R1", "paper: gpt-oss-120b", "pattern"]
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in
                         (r["metric"], fmt(r["a"], r["pct"]), fmt(r["b"], r["pct"]), r["paper_r1"], r["paper_gpt_oss"]))
        + f"<td>{mark[r['same']]}</td></tr>" for r in rows)
    table = html_table([], head).replace("</table>", body_rows + "</table>")
    n_same = sum(r["same"] is True for r in rows)
    n_tested = sum(r["same"] is not None for r in rows)
    srcs = [["loss probe", ", ".join(loss_uris) or "-"], ["step judge", ", ".join(judge_uris) or "-"]]
    return page(f"raypipe diagnose: {a} vs {b}", (
        f"<p>A should play the divergent source (the paper's DeepSeek-R1), B the convergent one (gpt-oss-120b). "
        f"<b>{n_same} of {n_tested}</b> comparable figures point the same way as in the paper. The paper's numbers "
        "come from its own models and data; compare directions, not magnitudes (a different scoring model shifts "
        "every loss).</p>" + table + html_table(srcs, ["summary", "from"])))


def write_compare(a: str, b: str, loss_uris: list[str], judge_uris: list[str], output: str,
                  storage: io.Storage) -> list[dict]:
    loss = load_summaries(loss_uris, storage) if loss_uris else {}
    judge = load_summaries(judge_uris, storage) if judge_uris else {}
    missing = [s for s in (a, b) if s not in loss and s not in judge]
    if missing:
        known = sorted(set(loss) | set(judge))
        raise ValueError(f"source(s) {missing} not in the summaries; sources there: {known}")
    rows = compare_rows(a, b, loss, judge)
    io.write_text(compare_html(a, b, rows, loss_uris, judge_uris), output, storage)
    return rows
