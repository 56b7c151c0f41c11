"""HTML reports of the diagnostics: loss histograms and CDFs, the judge's transition heatmaps."""
from __future__ import annotations

import html
import json

import numpy as np

from raypipe.core import io
from raypipe.core.html import fmt, images, page, png_base64, pyplot
from raypipe.core.html import table as html_table


def loss_plots(summary: dict) -> dict[str, str]:
    plt = pyplot()
    edges = np.asarray(summary["loss_edges"])
    sources = [s for s, v in summary["sources"].items() if v["tokens"]]
    out: dict[str, str] = {}
    if not sources:
        return out
    fig, axes = plt.subplots(len(sources), 1, figsize=(7, 2.2 * len(sources)), squeeze=False)
    for ax, s in zip(axes[:, 0], sources):
        hist = np.asarray(summary["sources"][s]["loss_hist"])
        ax.stairs(hist / max(hist.sum(), 1), np.maximum(edges, 1e-6), fill=True, color="#4477aa")
        ax.axvline(summary["config"]["routine_threshold"], color="#cc3311", linestyle="--", label="routine threshold")
        ax.set_xscale("log")
        ax.set_title(s, fontsize=9)
        ax.set_ylabel("share of tokens")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("token loss (nats, log scale; the first bin holds 0 to 1e-5)")
    fig.tight_layout()
    out["token-loss histogram per source"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in sources:
        hist = np.asarray(summary["sources"][s]["loss_hist"])
        ax.step(np.maximum(edges[1:], 1e-6), np.cumsum(hist) / max(hist.sum(), 1), where="post", label=s)
    ax.axvline(summary["config"]["routine_threshold"], color="#cc3311", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("token loss (nats)")
    ax.set_ylabel("CDF")
    ax.legend(fontsize=7)
    out["token-loss CDF per source"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for s in sources:
        ys = [np.nan if y is None else y for y in summary["sources"][s]["loss_by_decile"]]
        ax.plot(range(1, 11), ys, marker="o", label=s)
    ax.set_xlabel("position decile in the response")
    ax.set_ylabel("mean token loss")
    ax.legend(fontsize=7)
    out["loss by position decile"] = png_base64(fig)
    return out


def loss_html(summary: dict) -> str:
    head = ["source", "trajectories", "scored", "errors", "truncated", "tokens", "mean loss", "routine share",
            "key-token loss", "marker-token loss", "other-token loss", "mean entropy", "marker entropy"]
    rows = [[s, v["trajectories"], v["scored"], sum(v["errors"].values()), v["truncated"], v["tokens"],
             fmt(v["mean_loss"]), fmt(v["routine_share"], True), fmt(v["key_token_loss"]), fmt(v["marker_loss"]),
             fmt(v["other_loss"]), fmt(v["mean_entropy"]), fmt(v["marker_entropy"])]
            for s, v in summary["sources"].items()]
    cfg = summary["config"]
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in summary["definitions"].items())
    errors = {s: v["errors"] for s, v in summary["sources"].items() if v["errors"]}
    body = (f"<p>Model <b>{html.escape(cfg['model'])}</b>, window {cfg['window']} tokens, routine threshold "
            f"{cfg['routine_threshold']} nats, lexicon <b>{html.escape(cfg['lexicon'])}</b>; {summary['rows']} "
            f"trajectories in {summary['seconds']} s.</p>{html_table(rows, head)}<ul>{defs}</ul>"
            + (f"<h2>Errors</h2><pre>{html.escape(json.dumps(errors, indent=1))}</pre>" if errors else "")
            + images(loss_plots(summary))
            + f"<h2>Config</h2><pre>{html.escape(json.dumps(cfg, indent=1))}</pre>")
    return page("raypipe loss probe", body)


def write_loss_report(summary: dict, uri: str, storage: io.Storage) -> None:
    io.write_text(loss_html(summary), uri, storage)


def judge_plots(summary: dict) -> dict[str, str]:
    plt = pyplot()
    sources = [s for s, v in summary["sources"].items() if v["steps"]]
    out: dict[str, str] = {}
    if not sources:
        return out
    labels = summary["sources"][sources[0]]["transition_labels"]
    fig, axes = plt.subplots(1, len(sources), figsize=(3.6 * len(sources), 3.4), squeeze=False)
    for ax, s in zip(axes[0], sources):
        p = np.array([[np.nan if x is None else x for x in row] for row in summary["sources"][s]["transition_probs"]])
        ax.imshow(p, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(labels)):
            for j in range(len(labels)):
                if not np.isnan(p[i, j]):
                    ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if p[i, j] < 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("next step")
    axes[0, 0].set_ylabel("step")
    fig.tight_layout()
    out["transition matrix P(next label | label) per source"] = png_base64(fig)

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(sources) + 1.5))
    left = np.zeros(len(sources))
    for lab in labels:
        vals = np.array([summary["sources"][s]["label_shares"][lab] or 0.0 for s in sources])
        ax.barh(sources, vals, left=left, label=lab)
        left += vals
    ax.set_xlabel("share of labelled steps")
    ax.legend(fontsize=8, ncol=4)
    out["label shares per source"] = png_base64(fig)
    return out


def judge_html(summary: dict) -> str:
    head = ["source", "trajectories", "steps", "propose", "deduce", "verify", "other", "P(propose→propose)",
            "unlabelled", "failed requests", "corr(propose share, branch_ratio)"]
    rows = []
    for s, v in summary["sources"].items():
        sh, corr = v["label_shares"], v["propose_vs_branch_ratio"]
        rows.append([s, v["trajectories"], v["steps"], fmt(sh["propose"], True), fmt(sh["deduce"], True),
                     fmt(sh["verify"], True), fmt(sh["other"], True), fmt(v["p_propose_propose"]),
                     fmt(v["unlabelled_rate"], True),
                     f"{v['failed_requests']}/{v['requests']}" if v["requests"] else "-",
                     f"{fmt(corr['pearson'])} (Spearman {fmt(corr['spearman'])}, n={corr['n']})"])
    body = (f"<p>Judge <b>{html.escape(summary['judge'])}</b>"
            + (f", prompt {html.escape(summary['prompt_version'])}" if summary.get("prompt_version") else "")
            + f"; {summary['rows']} trajectories in {summary['seconds']} s. Shares are over labelled steps; "
            "transitions count consecutive labelled steps within a trajectory.</p>"
            + html_table(rows, head) + images(judge_plots(summary))
            + f"<h2>Config</h2><pre>{html.escape(json.dumps(summary['config'], indent=1))}</pre>")
    return page("raypipe step judge", body)


def write_judge_report(summary: dict, uri: str, storage: io.Storage) -> None:
    io.write_text(judge_html(summary), uri, storage)
