"""The experiment's results table, shaped like the paper's: one row per arm, accuracy per benchmark, the average,
plus what curation kept and the SFT loss, with links to every stage's report. Written as JSON, CSV, Markdown, HTML."""
from __future__ import annotations

import csv
import html
import io as _io
import json

from raypipe.core import io

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


def problem_accuracy(results: dict | None, benchmark: str) -> dict[str, float]:
    """{problem id: share of its samples graded correct} of one benchmark of an eval's results.json."""
    hits: dict[str, list[int]] = {}
    for sample in (results or {}).get("samples", []):
        if sample.get("benchmark") == benchmark:
            hits.setdefault(str(sample["problem_id"]), []).append(sample.get("verdict") == "correct")
    return {p: sum(v) / len(v) for p, v in hits.items()}


# The paired comparisons the table tests, when both arms ran: the paper's filter against keeping everything and
# against dropping as many rows at random.
COMPARISONS = (("A-drop-top-keyword", "A-all"), ("A-drop-top-keyword", "A-drop-random"))
EFFECT = 0.05  # the effect the study should be able to tell from none (5 points)


def _mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def student_judge(results: list[dict]) -> dict:
    """The keyword judge's figures of a trained student's own outputs, over its seeds (eval's metrics)."""
    shares, pp = [], []
    for r in results:
        for name, m in (r.get("metrics") or {}).items():
            if name != "overall" and m.get("branch"):
                shares.append(m["branch"].get("propose_share"))
                pp.append(m["branch"].get("p_propose_propose"))
    return {"propose_share": _mean_of(shares), "p_propose_propose": _mean_of(pp)}


def collect(cfg, storage: io.Storage, plan: dict | None = None) -> dict:
    """Rows from the arms' outputs on disk; a stage that has not finished leaves its cells empty. With several
    seeds, each accuracy is the mean over seeds with its 95 % interval (raypipe.experiment.stats)."""
    from raypipe.eval.benchmarks import REGISTRY
    from raypipe.experiment.budget import read_budget
    from raypipe.experiment.config import DROP_ARMS
    from raypipe.experiment.drops import dropped_ids, overlaps
    from raypipe.experiment.stats import accuracy_table, mean_ci, paired_test, seeds_for

    budget = read_budget(cfg) or {}
    pairing = _json(io.join(cfg.output, "paired", "pairing.json"), storage)
    prompts = {}
    seeds = cfg.seed_list()
    per_problem: dict[str, dict[str, dict[int, dict[str, float]]]] = {}

    rows = []
    for arm in cfg.arms:
        root = io.join(cfg.output, "arms", arm)
        manifest = _json(io.join(cfg.stage_dir(arm, "curate"), "manifest.json"), storage)
        summaries = {k: _json(io.join(cfg.stage_dir(arm, "train", k), "train_summary.json"), storage) for k in seeds}
        results = {k: _json(io.join(cfg.stage_dir(arm, "eval", k), "results.json"), storage) for k in seeds}
        summaries = {k: v for k, v in summaries.items() if v}
        results = {k: v for k, v in results.items() if v}
        matched = (budget.get("arms") or {}).get(arm) or {}
        for summary in summaries.values():
            if summary.get("prompt_template"):
                prompts.setdefault(summary["prompt_template"].get("example_user_turn"), set()).add(
                    summary["prompt_template"].get("version"))
        for r in results.values():
            stamp = r.get("stamp", {}).get("prompt_template")
            if stamp:
                prompts.setdefault(stamp.get("example_user_turn"), set()).add(stamp.get("version"))
        per_problem[arm] = {b: {k: problem_accuracy(r, b) for k, r in results.items()} for b in cfg.benchmarks}
        stats = {b: accuracy_table({k: v for k, v in per_problem[arm][b].items() if v}) for b in cfg.benchmarks}
        acc = {b: stats[b]["mean"] for b in cfg.benchmarks}
        done = [v for v in acc.values() if v is not None]
        losses = [s.get("final_loss") for s in summaries.values() if s.get("final_loss") is not None]
        first = summaries.get(seeds[0]) or next(iter(summaries.values()), None)
        rows.append({
            "arm": arm,
            "accuracy": acc,
            "benchmarks": stats,
            "average": sum(done) / len(done) if done and len(done) == len(acc) else None,
            "n": {b: (((results.get(seeds[0]) or {}).get("metrics") or {}).get(b) or {}).get("n")
                  for b in cfg.benchmarks},
            "seeds_done": sorted(results),
            "train_rows": (manifest or {}).get("counts", {}).get("kept"),
            "dropped": (manifest or {}).get("counts", {}).get("dropped"),
            "final_loss": mean_ci(losses)[0],
            "final_loss_ci95": mean_ci(losses)[1],
            "final_loss_seeds": {str(k): s.get("final_loss") for k, s in summaries.items()},
            "tokens_per_s": _mean_of([s.get("tokens_per_s") for s in summaries.values()]),
            "student_judge": student_judge(list(results.values())) if results else None,
            "steps": (first or {}).get("steps"),
            "budget_rows": matched.get("rows"), "supervised_tokens": matched.get("supervised_tokens"),
            "trained_tokens": trained_tokens(cfg.stage_dir(arm, "train", seeds[0]), storage) if first else None,
            "overlong_before": matched.get("overlong_before"), "overlong_after": matched.get("overlong_after"),
            "truncated_without_answer": matched.get("truncated_without_answer"),
            "links": {k: u for k, u in arm_links(cfg, arm, seeds[0]).items() if io.exists(io.join(cfg.output, u),
                                                                                           storage)},
        })
    tests = []
    for a, b in COMPARISONS:
        if a in per_problem and b in per_problem:
            for bench in cfg.benchmarks:
                t = paired_test(per_problem[a][bench], per_problem[b][bench])
                if t:
                    half = (t["ci95"][1] - t["ci95"][0]) / 2 if t["ci95"] else None
                    t.update(a=a, b=b, benchmark=bench, half_width=half,
                             seeds_for_5_points=seeds_for(half, t["seeds"], EFFECT / 2)
                             if t["ci95_over"] == "seeds" else None)
                    tests.append(t)
    titles = {b: REGISTRY[b].title if b in REGISTRY else b for b in cfg.benchmarks}
    drops = {a: dropped_ids(cfg.stage_dir(a, "curate"), storage) for a in cfg.arms if a in DROP_ARMS}
    paired = (f"paired by {pairing['key']}: {pairing['paired']} problems of {pairing['union']} (every source "
              f"verified correct; {pairing['overlap']} in both)" if pairing else
              "not paired (each arm reads its whole source)" if cfg.pair_by == "none" else "pairing not finished")
    return {"name": cfg.name, "model": cfg.model, "metric": "avg@n", "seeds": seeds,
            "judge": judge_summaries(cfg.output, storage), "benchmarks": cfg.benchmarks,
            "titles": titles, "rows": rows, "tests": tests, "pairing": paired, "budget": {k: budget.get(k) for k in (
                "mode", "max_len", "overlong", "p99_length", "warning", "common_steps", "supervised_tokens_spread")},
            "drop_overlap": overlaps(drops), "prompt": {"same_in_training_and_evaluation": len(prompts) <= 1,
                                                        "versions": sorted({v for vs in prompts.values() for v in vs})},
            "plan": plan, "links": {k: v for k, v in (("pairing", "paired/pairing.json"), ("budget", "budget/budget.json"),
                                                      ("judge A", "judge/A/report.html"),
                                                      ("judge B", "judge/B/report.html"))
                                    if io.exists(io.join(cfg.output, *v.split("/")), storage)}}


def arm_links(cfg, arm: str, seed: int) -> dict[str, str]:
    """The reports of an arm (its first seed's training and evaluation), relative to the experiment folder."""
    rel = {st: cfg.stage_dir(arm, st, seed)[len(cfg.output.rstrip("/")) + 1:] for st in ("curate", "train", "eval")}
    return {"curation": f"{rel['curate']}/report.html", "manifest": f"{rel['curate']}/manifest.json",
            "sft": f"{rel['train']}/train_summary.json", "eval": f"{rel['eval']}/report.html",
            "samples": f"{rel['eval']}/results.json"}


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


def _acc(stats: dict) -> str:
    """mean ± the 95 % half-width (over seeds, or over problems with one seed), in %."""
    if stats.get("mean") is None:
        return "-"
    ci = stats.get("ci95")
    return _pct(stats["mean"]) + ("" if not ci else f" ± {50 * (ci[1] - ci[0]):.1f}")


def _f(x, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _cells(table: dict, row: dict) -> list[str]:
    loss = row["final_loss"]
    over = f"{_v(row['overlong_before'])} / {_v(row['overlong_after'])}"
    judge = row.get("student_judge") or {}
    return ([row["arm"]] + [_acc(row["benchmarks"][b]) for b in table["benchmarks"]] + [_pct(row["average"])]
            + [_v(len(row["seeds_done"])), _v(row["train_rows"]), _v(row["budget_rows"]), _v(row["supervised_tokens"]),
               _v(row["trained_tokens"]), _v(row["steps"]), over, "-" if loss is None else f"{loss:.4f}",
               _pct(judge.get("propose_share")), _f(judge.get("p_propose_propose"))])


def _head(table: dict) -> list[str]:
    return (["arm"] + [table["titles"][b] for b in table["benchmarks"]]
            + ["Avg.", "seeds", "curated rows", "rows trained", "supervised tokens", "tokens trained", "steps",
               "over-long before / after", "final loss", "student Propose %", "student P(P->P)"])


def test_lines(table: dict) -> list[str]:
    """One line per paired test: the difference, its interval, the p-value, and the seeds a 5-point effect needs."""
    out = []
    for t in table.get("tests") or []:
        ci = t["ci95"]
        enough = t["half_width"] is not None and t["half_width"] <= EFFECT / 2
        need = ("" if enough or t.get("seeds_for_5_points") is None else
                f"; about {t['seeds_for_5_points']} seeds would tell a 5-point effect from none")
        out.append(f"Paired test on {table['titles'].get(t['benchmark'], t['benchmark'])}: {t['a']} - {t['b']} = "
                   f"{100 * t['difference']:+.1f} points (95 % CI over {t['ci95_over']} "
                   f"{'-' if not ci else f'{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}'}), p = {t['p_value']:.3g} over "
                   f"{t['pairs']} (seed, problem) pairs, {t['discordant']} discordant{need}.")
    return out


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
    out += test_lines(table)
    if table.get("plan"):
        out.append(f"Estimated cost: {table['plan']['gpu_hours']:.2f} GPU-hours (upper bound "
                   f"{table['plan']['gpu_hours_upper']:.2f}) at MFU {table['plan']['cost']['mfu']}.")
    return out


def to_markdown(table: dict) -> str:
    head = _head(table)
    lines = [f"{table['name']} — {table['metric']} (%, mean ± 95 % half-width over seeds {table['seeds']}), base model "
             f"{table['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table["rows"]]
    return "\n".join(lines + [""] + notes(table)) + "\n"


def to_csv(table: dict) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf)
    extra = ["train_rows", "dropped", "budget_rows", "supervised_tokens", "trained_tokens", "steps",
             "overlong_before", "overlong_after", "final_loss"]
    bounds = [f"{b}_{end}" for b in table["benchmarks"] for end in ("ci95_low", "ci95_high")]
    w.writerow(["arm", *table["benchmarks"], "average", *bounds, *extra])
    for r in table["rows"]:
        cis = [(r["benchmarks"][b].get("ci95") or [None, None])[i] for b in table["benchmarks"] for i in (0, 1)]
        w.writerow([r["arm"], *[r["accuracy"][b] for b in table["benchmarks"]], r["average"], *cis,
                    *[r[k] for k in extra]])
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
