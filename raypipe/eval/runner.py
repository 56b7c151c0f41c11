"""Run an evaluation: load benchmarks, generate the samples still missing, grade them, compute the metrics.

Progress is saved chunk by chunk under <output>/samples/ (graded samples, JSONL), so a restarted evaluation
skips every sample already scored and retries only the missing or failed ones.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict

from raypipe.core import io as rio
from raypipe.core.errors import ConfigMismatch
from raypipe.core.scoring import Scorer
from raypipe.eval import benchmarks as bm
from raypipe.eval import metrics, prompting
from raypipe.eval.config import EvalConfig
from raypipe.eval.grading import grade_samples
from raypipe.eval.sampling import GenRequest, sample_seed


def load_benchmarks(config: EvalConfig) -> dict[str, bm.LoadedBenchmark]:
    storage = config.storage()
    return {name: bm.load(name, config.data_dir, config.benchmark_files.get(name), storage, hub=config.hub,
                          check_size=config.size_check, limit=config.limit) for name in config.benchmarks}


def load_done(output: str, storage: rio.Storage) -> dict[str, dict]:
    """Graded samples already saved, by key; a later good sample replaces an earlier failed one."""
    fs, path = storage.filesystem(rio.join(output, "samples"))
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    done: dict[str, dict] = {}
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.path.endswith(".jsonl"):
            continue
        with fs.open_input_stream(info.path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line.strip():
                    s = json.loads(line)
                    if s["key"] not in done or not s.get("generation_error"):
                        done[s["key"]] = s
    return done


def check_output(config: EvalConfig, storage: rio.Storage) -> None:
    uri = rio.join(config.output, "eval_config.json")
    prev = rio.read_text(uri, storage)
    if prev is not None and json.loads(prev)["hash"] != config.hash() and not config.overwrite:
        raise ConfigMismatch(f"{config.output} holds an evaluation with other settings "
                             f"({json.loads(prev)['result_fields']}); use another --output or --overwrite")
    if prev is not None and json.loads(prev)["hash"] != config.hash():
        rio.remove_tree(rio.join(config.output, "samples"), storage)
    rio.write_text(json.dumps({"hash": config.hash(), "result_fields": config.result_fields()}, indent=1), uri,
                   storage)


def pending_samples(config: EvalConfig, loaded: dict[str, bm.LoadedBenchmark], done: dict[str, dict]):
    """(every sample's skeleton by key, the generation requests still needed)."""
    skeletons: dict[str, dict] = {}
    todo: list[GenRequest] = []
    for name, b in loaded.items():
        for p in b.problems:
            msgs = prompting.messages(p.problem, config.prompt_version)
            for j in range(config.n):
                key = f"{name}/{p.id}/{j}"
                skeletons[key] = {"key": key, "benchmark": name, "problem_id": p.id, "sample": j,
                                  "problem": p.problem, "reference_answer": p.answer}
                prev = done.get(key)
                if prev is None or prev.get("generation_error") or prev.get("verdict") is None:
                    todo.append(GenRequest(key, msgs, sample_seed(config.seed, key), p.problem))
    return skeletons, todo


def run_eval(config: EvalConfig, backend=None, log=print) -> dict:
    from raypipe.eval.backends import BACKENDS
    from raypipe.eval.results import write_results

    storage = config.storage()
    loaded = load_benchmarks(config)
    check_output(config, storage)
    done = load_done(config.output, storage)
    skeletons, todo = pending_samples(config, loaded, done)
    resumed = sum(1 for k in skeletons if k in done and k not in {r.key for r in todo})
    log(f"eval: {len(skeletons)} samples over {len(loaded)} benchmarks; {resumed} already scored, "
        f"{len(todo)} to generate")
    backend = backend or BACKENDS.get(config.backend).from_config(config)
    scorer = Scorer(config.scoring())
    t0 = time.perf_counter()
    generated = failed = 0
    try:
        backend.setup()
        scorer.setup()
        run_id = f"{int(time.time()):011d}-{uuid.uuid4().hex[:8]}"
        for start in range(0, len(todo), config.chunk_size):
            chunk = todo[start:start + config.chunk_size]
            results = backend.generate(chunk, config.sampling())
            samples = []
            for req, res in zip(chunk, results):
                s = dict(skeletons[req.key], response=res.text, finish_reason=res.finish_reason,
                         prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens,
                         generation_seconds=res.seconds, seed=req.seed, generation_error=res.error)
                samples.append(s)
            grade_samples(samples, scorer)
            body = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
            rio.write_text(body, rio.join(config.output, "samples", f"part-{run_id}-{start // config.chunk_size:05d}.jsonl"),
                           storage)
            for s in samples:
                done[s["key"]] = s
            generated += len(samples)
            failed += sum(1 for s in samples if s.get("generation_error"))
            log(f"eval: {start + len(chunk)}/{len(todo)} generated and graded")
        info = backend.info()
        scorer_versions = scorer.versions()
    finally:
        scorer.close()
        backend.close()
    seconds = time.perf_counter() - t0
    samples = [done[k] for k in skeletons]
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_bench[s["benchmark"]].append(s)
    per = {name: metrics.benchmark_metrics(by_bench[name], config.n) for name in loaded}
    run = {"generated_this_run": generated, "generation_errors_this_run": failed, "resumed_samples": resumed,
           "seconds": round(seconds, 3),
           "samples_per_s": round(generated / seconds, 3) if seconds and generated else None}
    results = write_results(config, loaded, per, samples, info, scorer_versions, run, storage)
    log(f"eval: overall avg@{config.n} = {results['metrics']['overall']['avg@n']}; wrote {config.output}/results.json")
    return results
