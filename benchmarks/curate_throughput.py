"""Curation throughput: a naive one-process script vs raypipe's kernels in one process vs the full Ray Data job.

Builds a corpus of >= 1 GB by repeating the real trajectories of ../shared/data/trajectories with fresh ids and
a numbered problem (so no copy is an exact duplicate of another), sharded into flat JSONL files, then measures, in
one run:
  1. naive: json.loads, math-verify on the whole response, a Python regex loop for steps and markers;
  2. raypipe's kernels in one process: the job's own per-chunk functions (score_chunk, compute_thresholds,
     write_shard) with no Ray, so the job's per-core rate is set against the same work;
  2b. the same kernels in one process per core, no Ray (the machine's own ceiling for parallel work);
  3. the full Ray Data job (raypipe curate) on all cores, starting its local Ray (as `make demo` does);
  4. the same job on a Ray that is already running (as a job submitted to a cluster finds it);
  6. the demo: `raypipe curate` on the 600 real rows as a new user runs it (command start to manifest, a process of
     its own: in process below --in-process-below-mb, and forced onto Ray), against the naive script on them;
  5. with --nested-gb > 0, the full job on the same trajectories in nested layouts read row by row (chat
     messages with reasoning_content; OpenR1 rows of 4 generations each), to set beside the flat fast path.
The naive script is far too slow for 1 GB, so it runs on a time budget and its rate is reported per MB.

    .venv/bin/python benchmarks/curate_throughput.py [--gb 1.0] [--naive-seconds 60] [--nested-gb 0.25]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def as_flat(r: dict, c: int) -> dict:
    return {**r, "id": f"{r['id']}#{c}", "problem": f"{r['problem']} (copy {c})"}


def as_chat(r: dict, c: int) -> dict:
    """The same trajectory as chat messages with the reasoning in reasoning_content (the `chat` format)."""
    from raypipe.core.schema import split_reasoning

    split = split_reasoning(r["response"])
    return {"id": f"{r['id']}#{c}", "model": r.get("model"), "answer": r["answer"], "messages": [
        {"role": "user", "content": f"{r['problem']} (copy {c})"},
        {"role": "assistant", "content": split.final, "reasoning_content": split.thinking}]}


def as_openr1(group: list[dict], c: int) -> dict:
    """Up to 4 trajectories as one OpenR1-Math-220k row (one generation each; the first one's problem)."""
    first = group[0]
    return {"uuid": f"{first['id']}#{c}", "problem": f"{first['problem']} (copy {c})", "answer": first["answer"],
            "solution": "", "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads",
            "generations": [r["response"] for r in group], "correctness_math_verify": [True] * len(group),
            "correctness_llama": None, "finish_reasons": None, "correctness_count": len(group),
            "is_reasoning_complete": [True] * len(group), "messages": []}


def build_corpus(dst: Path, gb: float, shards: int, layout: str = "flat") -> tuple[list[Path], int, int]:
    """Copies of the real trajectories in `layout` (flat | chat | openr1) up to `gb`; (files, bytes, records)."""
    src = [json.loads(line) for f in sorted((SHARED / "trajectories").glob("*.jsonl")) for line in f.open()]
    if layout == "openr1":
        lines = [json.dumps(as_openr1(src[i:i + 4], 0)) for i in range(0, len(src), 4)]
    else:
        lines = [json.dumps((as_chat if layout == "chat" else as_flat)(r, 0)) for r in src]
    copies = int(gb * 1e9 / sum(len(s.encode()) for s in lines)) + 1
    stamp = dst / f"corpus-v2-{layout}-{gb}-{shards}.done"
    files = [dst / f"part-{i:04d}.jsonl" for i in range(shards)]
    if not stamp.exists():
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        handles = [f.open("w") for f in files]
        n = 0
        for c in range(copies):
            rows = ([as_openr1(src[i:i + 4], c) for i in range(0, len(src), 4)] if layout == "openr1" else
                    [(as_chat if layout == "chat" else as_flat)(r, c) for r in src])
            for row in rows:
                handles[n % shards].write(json.dumps(row) + "\n")
                n += 1
        for h in handles:
            h.close()
        stamp.write_text("ok")
    total = sum(f.stat().st_size for f in files)
    return files, total, copies * len(src)


def naive(files: list[Path], budget_s: float) -> tuple[int, int, float]:
    """What a first script does: parse every line, math-verify the whole response, loop regexes in Python."""
    from math_verify import parse, verify

    markers = re.compile(r"\b(Perhaps|Another|Alternatively)\b", re.IGNORECASE)
    t0 = time.perf_counter()
    rows = nbytes = 0
    for f in files:
        for line in f.open():
            r = json.loads(line)
            gold = parse(f"${r['answer']}$")
            pred = parse(r["response"])
            _ = verify(gold, pred)
            steps = [s for s in re.split(r"\n\s*\n", r["response"]) if s.strip()]
            _ = sum(1 for s in steps if markers.search(s)) / max(1, len(steps))
            rows += 1
            nbytes += len(line.encode())
            if time.perf_counter() - t0 > budget_s:
                return rows, nbytes, time.perf_counter() - t0
    return rows, nbytes, time.perf_counter() - t0


def kernels(files: list[Path], out: Path) -> tuple[int, int, float]:
    """The job's own per-chunk work in one process, no Ray: phase 1's score_chunk (read, normalise, verify,
    measure, content hash, markup votes, scored and rejects Parquet, completion marker), the thresholds from the
    scored rank columns (compute_thresholds, where the job aggregates with Ray; this corpus has no duplicates),
    then phase 3's write_shard (decide, curated/ and dropped/, the chunk's aggregate). The grader runs in a worker
    process beside it, so its CPU-seconds are reported too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raypipe.core.formats import make_format
    from raypipe.core.io import Storage
    from raypipe.core.scoring import Scorer
    from raypipe.curate.chunks import plan_chunks
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import write_shard
    from raypipe.curate.phase2 import rank_columns
    from raypipe.curate.score import score_chunk, scored_uri
    from raypipe.curate.exact_thresholds import compute_thresholds

    storage = Storage()
    shutil.rmtree(out, ignore_errors=True)
    cfg = CurateConfig(input=str(files[0].parent), output=str(out), num_cpus=1)
    chunks = plan_chunks([(str(f), f.stat().st_size) for f in files], storage, cfg.chunk_mb << 20)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    scorer = Scorer(cfg.scoring()).setup()  # timed, as the job's actors start theirs
    fmt = make_format(cfg.format, cfg.fields)
    rows = sum(score_chunk(c, cfg, storage, scorer, fmt)["rows"] for c in chunks)
    scorer.close()
    t1 = time.perf_counter()
    ranks = pa.concat_tables([pq.read_table(scored_uri(cfg.output, c.key), columns=rank_columns(cfg))
                              for c in chunks])
    policy = compute_thresholds(ranks, cfg.policy())
    for c in chunks:
        write_shard(c.key, cfg, policy, storage)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    nbytes = sum(f.stat().st_size for f in files)
    print(f"kernels: {seconds:.1f} s wall (score {t1 - t0:.1f} s, select + write {seconds - t1 + t0:.1f} s), "
          f"{cpu:.1f} CPU-s in this process and its math-verify worker ({nbytes / 1e6 / cpu:.1f} MB per CPU-second)",
          flush=True)
    return rows, nbytes, seconds


def parallel_kernels(files: list[Path], out: Path, procs: int) -> tuple[int, int, float]:
    """The kernels in `procs` independent processes (files dealt round-robin), no Ray: what this machine gives
    when nothing but the work shares its cores, the ceiling for the job's per-core rate."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
        got = list(pool.map(kernels, [files[i::procs] for i in range(procs)],
                            [out / f"proc-{i}" for i in range(procs)]))
    return sum(g[0] for g in got), sum(g[1] for g in got), time.perf_counter() - t0


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the scorer's math-verify worker, once closed)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def full_job(corpus: Path, out: Path, cpus: int, fmt: str | None = None, warm: bool = False) -> tuple[int, int, float]:
    """`raypipe curate` on the corpus. warm: on a Ray that is already running (as a job submitted to a cluster
    finds it), so Ray's start is not timed; else the job starts its local Ray, as `make demo` does."""
    import ray

    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate
    from raypipe.ray_env import ensure_ray

    shutil.rmtree(out, ignore_errors=True)
    if warm:
        ensure_ray(cpus)
    t0 = time.perf_counter()
    m = run_curate(CurateConfig(input=str(corpus), output=str(out), num_cpus=cpus, overwrite=True, format=fmt,
                                in_process_below_mb=0))
    seconds = time.perf_counter() - t0
    ray.shutdown()
    nbytes = sum(os.path.getsize(f) for f in glob.glob(str(corpus / "*.jsonl")))
    return m["counts"]["records"], nbytes, seconds


def cpu_seconds() -> float:
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def demo(out: Path, cpus: int, on_ray: bool) -> float:
    """`raypipe curate` on the real trajectories in a process of its own, as `make demo` runs it: seconds from the
    command's start to its exit (the manifest is its last write)."""
    import subprocess

    cmd = [sys.executable, "-m", "raypipe.cli", "curate", "--input", str(SHARED / "trajectories"), "--output",
           str(out), "--overwrite", "--num-cpus", str(cpus), *(["--in-process-below-mb", "0"] if on_ray else [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--naive-seconds", type=float, default=60.0)
    ap.add_argument("--work", default=str(ROOT / ".cache" / "bench"))
    ap.add_argument("--skip", default="", help="comma list of stages to skip: naive,kernels,parallel,job,warm")
    ap.add_argument("--nested-gb", type=float, default=0.0, help="size of each nested-layout corpus (0: skip)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cpus = os.cpu_count() or 1
    work = Path(args.work)
    t = time.perf_counter()
    files, total, n_rows = build_corpus(work / "corpus", args.gb, args.shards)
    print(f"load average {os.getloadavg()[0]:.2f}; corpus: {n_rows} rows, {total / 1e9:.2f} GB in {len(files)} files ({time.perf_counter() - t:.0f}s to build or check)")
    results = {}
    skip = set(args.skip.split(","))
    if "naive" not in skip:
        results["1 naive script, 1 process"] = (*naive(files, args.naive_seconds), 1)
    kernel_cpu = None
    if "kernels" not in skip:
        c0 = cpu_seconds()
        results["2 raypipe kernels, 1 process"] = (*kernels(files, work / "kernels-out"), 1)
        kernel_cpu = cpu_seconds() - c0  # the kernels' process and its math-verify worker
    if "parallel" not in skip and cpus > 1:
        results[f"2b kernels, {cpus} processes, no Ray"] = (
            *parallel_kernels(files, work / "parallel-out", cpus), cpus)
    if "job" not in skip:
        results[f"3 raypipe curate, {cpus} cores, starts Ray"] = (*full_job(work / "corpus", work / "job-out", cpus),
                                                                 cpus)
    if "warm" not in skip:
        results[f"4 raypipe curate, {cpus} cores, Ray running"] = (
            *full_job(work / "corpus", work / "job-out", cpus, warm=True), cpus)
    if args.nested_gb > 0:
        for i, (layout, fmt) in enumerate((("chat", "chat"), ("openr1", "openr1")), start=5):
            build_corpus(work / f"corpus-{layout}", args.nested_gb, args.shards, layout)
            results[f"{i} curate --format {fmt}, {cpus} cores"] = (
                *full_job(work / f"corpus-{layout}", work / f"job-out-{layout}", cpus, fmt), cpus)
    demo_figures = {}
    if "demo" not in skip:
        real = sorted((SHARED / "trajectories").glob("*.jsonl"))
        rows, nbytes, naive_s = naive(real, float("inf"))
        demo_figures = {"naive": naive_s, "in process": demo(work / "demo-out", cpus, on_ray=False),
                        "on Ray": demo(work / "demo-ray-out", cpus, on_ray=True)}
        print(f"demo, {rows} real rows ({nbytes / 1e6:.1f} MB): naive script {naive_s:.1f}s; raypipe curate (command "
              f"start to manifest) in process {demo_figures['in process']:.1f}s, on its own Ray "
              f"{demo_figures['on Ray']:.1f}s; ratio to the naive script {demo_figures['in process'] / naive_s:.2f} "
              f"(on Ray {demo_figures['on Ray'] / naive_s:.2f}; target <= 0.5)")
    print(f"\n{'stage':40s} {'rows':>9s} {'MB':>8s} {'sec':>8s} {'rows/s':>9s} {'MB/s':>8s} {'MB/s/core':>10s}")
    rates = {}
    for name, (rows, nbytes, sec, cores) in results.items():
        mbs = nbytes / 1e6 / sec
        rates[name] = mbs
        print(f"{name:40s} {rows:9d} {nbytes / 1e6:8.1f} {sec:8.1f} {rows / sec:9.1f} {mbs:8.2f} {mbs / cores:10.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    names = list(rates)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            print(f"ratio ({names[j].split()[0]}) / ({names[i].split()[0]}) throughput: {rates[names[j]] / rates[names[i]]:.2f}x")
    per_core = {n.split()[0]: rates[n] / results[n][3] for n in names}
    for job in ("2b", "3", "4"):
        for base in ("2", "2b"):
            if base in per_core and job in per_core and job != base:
                print(f"per core: ({job}) / ({base}) = {per_core[job] / per_core[base]:.2f}"
                      + (" (target >= 0.8)" if base == "2" and job != "2b" else ""))
    figures = {}
    if "2b" in per_core:
        figures.update(job_vs_ceiling_running=per_core.get("4", 0) / per_core["2b"],
                       job_vs_ceiling_own=per_core.get("3", 0) / per_core["2b"])
    if "1" in per_core and "2" in per_core:
        figures["kernels_vs_naive"] = per_core["2"] / per_core["1"]
    if kernel_cpu:
        figures["kernels_mb_per_cpu_s"] = results["2 raypipe kernels, 1 process"][1] / 1e6 / kernel_cpu
    if demo_figures:
        figures["demo_vs_naive"] = demo_figures["in process"] / demo_figures["naive"]
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
