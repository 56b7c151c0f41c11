"""`raypipe generate`: problems in, a teacher's traces out (in its own markup), curated by the same policy code as
`raypipe curate`, with the generation's accounting in the manifest.

1. units: a (problem, sample index) each, with its own seed and marker (raypipe.generate.units); a rerun skips the
   finished ones. With a quota, rounds: a problem is sampled again until it has K kept traces or max_samples.
2. the WriteTraces stage (raypipe.generate.teacher) on the executor: a streaming teacher in a pool of workers, each
   with `concurrency` requests in flight; another backend in this process.
3. generation/traces/ (finished traces) and generation/aborted/ (stopped ones, with their reason and tokens); then
   the curation job on traces/ into the output folder, and the accounting added to its manifest.
"""
from __future__ import annotations

import json
import time
from collections import Counter

from raypipe.core import io
from raypipe.core.policy import Policy
from raypipe.generate.config import GenerateConfig
from raypipe.generate.teacher import STREAMING, WriteTraces
from raypipe.generate.units import load_problems, next_round, quota_report, read_markers

UNITS_PER_BATCH = 16  # units a worker takes at once (a streaming worker has `concurrency` of them in flight)


def _say(msg: str) -> None:
    print(f"[raypipe] generate: {msg}", flush=True)


def starting_policy(cfg: GenerateConfig) -> Policy:
    """The thresholds the workers decide with: a reference manifest's, else none yet (running quantiles later)."""
    if cfg.reference_manifest:
        from raypipe.online.scorer import load_run

        return load_run(cfg.reference_manifest, cfg.storage()).policy
    return cfg.policy()


def running_policy(cfg: GenerateConfig, policy: Policy, done: dict[str, dict]) -> Policy:
    """Without a reference manifest: the default threshold is the running (1 - drop_top) quantile of the finished
    verified-correct traces' branch scores (the exact thresholds come from the curation at the end)."""
    if cfg.reference_manifest or cfg.rule == "keep-all":
        return policy
    scores = sorted(r["branch_score"] for r in done.values() if r.get("status") == "finished"
                    and r.get("verdict") == "correct" and r.get("branch_score") is not None)
    if len(scores) < 10:
        return policy
    k = max(0, min(len(scores) - 1, int(len(scores) * (1 - cfg.drop_top))))
    return policy.model_copy(update={"default_threshold": scores[k]})


def run_generate(cfg: GenerateConfig) -> dict:
    from raypipe.executor import LocalExecutor, RayExecutor
    from raypipe.ray_env import ensure_ray, quiet_ray

    t0 = time.time()
    storage = cfg.storage()
    problems = load_problems(cfg)
    streaming = cfg.backend in STREAMING
    if streaming:
        ensure_ray(cfg.num_cpus, plugins=cfg.plugins)
    ex = RayExecutor() if streaming else LocalExecutor()
    policy = starting_policy(cfg)
    done = read_markers(cfg)
    _say(f"{len(problems)} problems from {cfg.input}; {len(done)} units already finished -> {cfg.output}")
    rounds = 0
    with quiet_ray():
        while True:
            todo = next_round(problems, done, cfg)
            if not todo:
                break
            rounds += 1
            policy = running_policy(cfg, policy, done)
            batches = [{"key": f"{rounds}-{i}", "units": json.dumps([
                {"key": u.key, "trace_id": u.trace_id, "problem_id": u.problem.id, "sample": u.sample,
                 "problem": u.problem.problem, "answer": u.problem.answer} for u in todo[i:i + UNITS_PER_BATCH]])}
                for i in range(0, len(todo), UNITS_PER_BATCH)]
            workers = cfg.workers or max(1, int(ex.cpus()))
            pool = ex.pool(workers) if streaming else None
            for out in ex.map(WriteTraces(cfg, policy), batches, pool=pool, label=f"round {rounds}",
                              records=lambda r: len(json.loads(r["records"]))):
                for record in json.loads(out["records"]):
                    done[record["key"]] = record
            if not cfg.keep_per_problem:
                break
    counts = write_traces(cfg, done)
    _say(f"{counts['finished']} finished, {counts['aborted']} aborted, {counts['error']} errors; curating")
    from raypipe.curate.job import run_curate

    if counts["finished"]:
        manifest = run_curate(cfg.curation())
    else:  # nothing finished: nothing to curate
        manifest = {"counts": {"input_rows": 0, "records": 0, "kept": 0, "dropped": 0, "rejected": 0},
                    "config": cfg.curation().model_dump(mode="json")}
    manifest["generation"] = accounting(cfg, problems, done, manifest, rounds, time.time() - t0)
    io.write_text(json.dumps(manifest, indent=2, default=str), io.join(cfg.output, "manifest.json"), storage)
    g = manifest["generation"]
    _say(f"{g['tokens']['completion']:,} tokens generated, {g['tokens']['aborted']:,} of them in stopped traces; "
         f"{g['verified_kept_per_million_tokens']:.1f} verified kept traces per million tokens")
    return manifest


def write_traces(cfg: GenerateConfig, done: dict[str, dict]) -> Counter:
    """generation/traces/ (finished traces, flat JSONL in the teacher's markup) and generation/aborted/."""
    storage = cfg.storage()
    by_status: dict[str, list[dict]] = {"finished": [], "aborted": [], "error": []}
    for key in sorted(done):
        by_status[done[key]["status"]].append(done[key])
    fields = ("id", "source", "problem", "answer", "response", "reasoning_content", "finish_reason",
              "completion_tokens", "sample")
    for part, status in (("traces", "finished"), ("aborted", "aborted")):
        io.remove_tree(cfg.generation_uri(part), storage)
        keep = fields + (("reason", "n_markers", "n_steps") if status == "aborted" else ())
        rows = [{k: r.get(k) for k in keep if r.get(k) is not None} for r in by_status[status]]
        if rows:
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            io.write_text(body, cfg.generation_uri(part, "part-00000.jsonl"), storage)
    return Counter({s: len(v) for s, v in by_status.items()})


def accounting(cfg: GenerateConfig, problems: list, done: dict[str, dict], manifest: dict, rounds: int,
               seconds: float) -> dict:
    records = list(done.values())
    status = Counter(r["status"] for r in records)
    tokens = {"prompt": sum(r.get("prompt_tokens") or 0 for r in records),
              "completion": sum(r.get("completion_tokens") or 0 for r in records),
              "aborted": sum(r.get("completion_tokens") or 0 for r in records if r["status"] == "aborted")}
    finished = [r for r in records if r["status"] == "finished"]
    aborted = [r for r in records if r["status"] == "aborted"]
    mean_finished = (sum(r.get("completion_tokens") or 0 for r in finished) / len(finished)) if finished else 0
    saved = sum(max(0.0, mean_finished - (r.get("completion_tokens") or 0)) for r in aborted)
    kept = manifest["counts"]["kept"]
    return {
        "teacher": {"backend": cfg.backend, "model": cfg.model, "source": records[0]["source"] if records else None},
        "abort_when": cfg.abort_when, "rounds": rounds, "units": len(records),
        "requests": sum(r.get("requests") or 0 for r in records),
        "traces": {"finished": status["finished"], "aborted": status["aborted"], "errors": status["error"]},
        "aborted_by_reason": dict(Counter(r.get("reason") for r in records if r["status"] == "aborted")),
        "errors": [{"id": r["id"], "error": r.get("error")} for r in records if r["status"] == "error"][:100],
        "tokens": tokens,
        # what a stopped trace would have written is not known: a lower estimate and an upper bound
        "tokens_saved": {"estimate": round(saved), "upper_bound": sum(max(0, cfg.max_tokens - (r.get(
            "completion_tokens") or 0)) for r in aborted),
            "basis": "estimate: per stopped trace, the mean length of the finished ones less what it had written "
                     "(0 when it was longer); upper bound: --max-tokens less what it had written"},
        "kept": kept,
        "verified_kept_per_million_tokens": kept / tokens["completion"] * 1e6 if tokens["completion"] else 0.0,
        "quota": quota_report(problems, done, cfg),
        "seconds": round(seconds, 1),
    }
