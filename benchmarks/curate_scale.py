"""Curation at scale on this machine: does time grow linearly and the driver's memory stay flat with the row
count, and does one big file spread over the cores like many shards?

    .venv/bin/python benchmarks/curate_scale.py [--rows 500000,2000000,5000000] [--big-gb 2.0] [--skip rows,big]

1. rows: short synthetic flat rows (about 500 B, numeric answers, 5 sources, heavy ties: most rows without a
   branch marker, so branch_ratio = 0) at each size, in 16 JSONL shards: wall time and the driver's peak RSS
   (the job runs in a child process that reports its own getrusage peak).
2. big: one JSONL file of real-length trajectories (the real ones of ../shared/data, repeated with numbered
   problems) against the same rows in 16 shards: wall time, outputs compared (a hash of the sorted ids per part
   and the thresholds), the share of both cores busy (from /proc/stat) and the scoring workers' peak RSS.
Each figure is printed with the load average. Scripts print figures; nothing here asserts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SOURCES = [f"model-{c}" for c in "abcde"]

CHILD = """
import json, resource, sys
from raypipe.curate.config import CurateConfig
from raypipe.curate.job import run_curate
m = run_curate(CurateConfig.model_validate_json(sys.argv[1]))
print("RESULT " + json.dumps({"counts": m["counts"], "thresholds": m["policy"]["thresholds"],
                              "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def short_row(rng: random.Random, i: int) -> str:
    a, b = rng.randint(1, 999), rng.randint(1, 999)
    steps = [f"Add {a} and {b} digit by digit, carrying where needed." for _ in range(rng.randint(2, 5))]
    if rng.random() < 0.2:  # a minority branch; most rows tie at branch_ratio = 0
        steps.insert(1, "Alternatively, count up from the larger number.")
    answer = a + b if rng.random() < 0.85 else a + b + 1
    response = "<think>\n" + "\n\n".join(steps) + f"\n</think>\nThe answer is $\\boxed{{{answer}}}$."
    return json.dumps({"id": f"r{i}", "source": SOURCES[i % len(SOURCES)], "problem": f"What is {a} + {b}? ({i})",
                       "answer": str(a + b), "response": response})


def build_short(dst: Path, rows: int, shards: int = 16) -> int:
    stamp = dst / f"done-{rows}"
    if not stamp.exists():
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        rng = random.Random(rows)
        handles = [open(dst / f"part-{s:02d}.jsonl", "w") for s in range(shards)]
        for i in range(rows):
            handles[i % shards].write(short_row(rng, i) + "\n")
        for h in handles:
            h.close()
        stamp.write_text("ok")
    return sum(f.stat().st_size for f in dst.glob("*.jsonl"))


def build_big(dst: Path, gb: float, shards: int = 16) -> tuple[Path, Path, int]:
    """(the one file, the folder of shards, bytes): the same rows in both, the shards as contiguous slices of the
    file (as `split -n l/16` makes them). Dealing rows round-robin instead would put each trajectory's copies 75
    rows apart in a shard, inside the Parquet compressor's reach: 5x smaller, faster-written parts that flatter
    the sharded run."""
    one, many = dst / "one", dst / "many"
    stamp = dst / f"done-v2-{gb}"
    if not stamp.exists():
        shutil.rmtree(dst, ignore_errors=True)
        one.mkdir(parents=True)
        many.mkdir(parents=True)
        src = [json.loads(line) for f in sorted((SHARED / "trajectories").glob("*.jsonl")) for line in f.open()]
        per_copy = sum(len(json.dumps(r)) + 1 for r in src)
        copies = int(gb * 1e9 / per_copy) + 1
        handles = [open(many / f"part-{s:02d}.jsonl", "w") for s in range(shards)]
        n = 0
        with open(one / "all.jsonl", "w") as big:
            for c in range(copies):
                for r in src:
                    line = json.dumps({**r, "id": f"{r['id']}#{c}", "problem": f"{r['problem']} (copy {c})"}) + "\n"
                    big.write(line)
                    handles[n * shards // (copies * len(src))].write(line)
                    n += 1
        for h in handles:
            h.close()
        stamp.write_text("ok")
    return one, many, (one / "all.jsonl").stat().st_size


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class WorkerPeak(threading.Thread):
    """The peak RSS of any scoring actor process (ray::...ScoreChunkActor), sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.2):
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "ScoreChunkActor" in cmd and p.info["memory_info"]:
                    self.peak = max(self.peak, p.info["memory_info"].rss)


def run_job(inp: Path, out: Path, **extra) -> dict:
    from raypipe.curate.config import CurateConfig

    shutil.rmtree(out, ignore_errors=True)
    cfg = CurateConfig(input=str(inp), output=str(out), num_cpus=os.cpu_count(), **extra)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    watcher = WorkerPeak()
    watcher.start()
    busy0, total0 = cpu_times()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, cfg.model_dump_json()], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    busy1, total1 = cpu_times()
    watcher.stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    return {**result, "seconds": seconds, "busy": (busy1 - busy0) / max(total1 - total0, 1),
            "worker_peak_mb": watcher.peak / 2**20, "load": (load0, os.getloadavg()[0]), "ids": ids_hash(out)}


def ids_hash(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    digests = {}
    for part in ("curated", "dropped", "rejects"):
        ids = sorted(f"{r['source']}\t{r['id']}" for f in sorted((out / part).glob("*.parquet"))
                     for r in pq.read_table(f, columns=["source", "id"]).to_pylist())
        digests[part] = f"{len(ids)}:{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:12]}"
    return digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="500000,2000000,5000000")
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--work", default=str(ROOT / ".cache" / "scale"))
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    work, skip = Path(args.work), set(args.skip.split(","))
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}", flush=True)
    if "rows" not in skip:
        sizes = [int(x) for x in args.rows.split(",")]
        results = {}
        for n in sizes:
            nbytes = build_short(work / f"short-{n}", n)
            r = run_job(work / f"short-{n}", work / f"short-{n}-out")
            results[n] = r
            print(f"rows {n:>10,}: {nbytes / 1e9:.2f} GB, {r['seconds']:7.1f} s, {n / r['seconds']:9,.0f} rows/s, "
                  f"driver peak {r['driver_peak_mb']:6.0f} MB, cores busy {r['busy']:.0%}, load "
                  f"{r['load'][0]:.1f}->{r['load'][1]:.1f}, counts {r['counts']}", flush=True)
        base = sizes[0]
        for n in sizes[1:]:
            print(f"time({n:,}) / time({base:,}) = {results[n]['seconds'] / results[base]['seconds']:.2f} "
                  f"(rows x{n / base:.0f}); driver peak ratio "
                  f"{results[n]['driver_peak_mb'] / results[base]['driver_peak_mb']:.2f}")
    if "big" not in skip:
        one, many, nbytes = build_big(work / "big", args.big_gb)
        runs = {"one file": run_job(one, work / "big-one-out"), "16 shards": run_job(many, work / "big-many-out")}
        for name, r in runs.items():
            print(f"{name:9s}: {nbytes / 1e9:.2f} GB, {r['seconds']:7.1f} s, {nbytes / 1e6 / r['seconds']:6.1f} MB/s, "
                  f"cores busy {r['busy']:.0%}, worker peak {r['worker_peak_mb']:.0f} MB, driver peak "
                  f"{r['driver_peak_mb']:.0f} MB, load {r['load'][0]:.1f}->{r['load'][1]:.1f}", flush=True)
        a, b = runs["one file"], runs["16 shards"]
        print(f"same outputs: ids {a['ids'] == b['ids']} ({a['ids']}), thresholds {a['thresholds'] == b['thresholds']}")
        print(f"time(one file) / time(16 shards) = {a['seconds'] / b['seconds']:.2f}; worker peak ratio "
              f"{a['worker_peak_mb'] / max(b['worker_peak_mb'], 1):.2f}")


if __name__ == "__main__":
    main()
