"""Driver memory of building manifest.json and report.html: from merged per-chunk aggregates vs from every row.

Writes N synthetic decided records (the columns phase 3 has) as Parquet chunks, then measures peak RSS in fresh
processes:
  worker:  aggregate one chunk (what each phase-3 task does beside its writes);
  driver:  merge the chunks' aggregates as they arrive, build the manifest, write the report;
  rows:    (with --baseline-src, a checkout of raypipe before aggregates) read the report's columns of every record
           into one table and build the manifest and the report from it, as the driver did.

    .venv/bin/python benchmarks/report_memory.py [--rows 2000000] [--chunk 100000] [--baseline-src DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["DeepSeek-R1", "gpt-oss-120b", "Sky-T1-32B", "QwQ-32B"]


def make_chunks(out: Path, rows: int, chunk: int, seed: int = 0) -> list[str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    files = []
    for k, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        steps = rng.integers(0, 400, n)
        branch = np.minimum(steps, rng.binomial(np.maximum(steps, 1), rng.uniform(0.02, 0.3, n)))
        ratio = pa.array(np.where(steps > 0, branch / np.maximum(steps, 1), np.nan), mask=steps == 0)
        pick = lambda options, p=None: pa.array(rng.choice(np.array(options, dtype=object), n, p=p))  # noqa: E731
        verdict = pick(["correct", "wrong", "no_answer", "unverified", "timeout"], [0.6, 0.2, 0.1, 0.08, 0.02])
        t = pa.table({
            "source": pick(SOURCES), "id": pa.array([f"r{start + i}" for i in range(n)]), "verdict": verdict,
            "branch_ratio": ratio, "branch_score": ratio, "n_steps": pa.array(steps),
            "n_tokens": pa.array(rng.integers(200, 32_000, n)), "markup": pick(["think", "harmony"]),
            "answer_source": pick([None, "final:boxed", "thinking:boxed", "final:phrase"], [0.1, 0.7, 0.1, 0.1]),
            "final_chars": pa.array(rng.integers(0, 3, n) * 100), "thinking_chars": pa.array(rng.integers(0, 90_000, n)),
            "unconsumed_text": pick([None, "note", "note,extra"], [0.9, 0.07, 0.03]),
            "shard": pa.array([f"s3://bucket/raw/part-{k:05d}.jsonl"] * n), "row": pa.array(np.arange(1, n + 1)),
            "record": pa.array(np.zeros(n, dtype=np.int64)),
            "content_hash": pa.array([f"{x:016x}" for x in rng.integers(0, 2**63, n)]),
            "input_id": pa.nulls(n, pa.string()), "duplicate_of": pick([None, "r0"], [0.99, 0.01]),
            "decision": pick(["keep", "drop"], [0.55, 0.45]), "reason": pick(["kept", "verdict:wrong", "top 10%"]),
        })
        path = out / f"part-{k:05d}.parquet"
        pq.write_table(t, path)
        files.append(str(path))
    return files


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, files: list[str], out: str) -> dict:
    import pyarrow.parquet as pq

    from raypipe.core import io
    from raypipe.core.policy import Policy
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.report import build_manifest, write_report
    from raypipe.core.html import pyplot

    pyplot()
    config = CurateConfig(input="bench-in", output=out)
    policy: Policy = config.policy()
    stats = [{"uri": f, "key": Path(f).stem, "rows": pq.read_metadata(f).num_rows,
              "records": pq.read_metadata(f).num_rows, "rejected": 0, "bytes": 0} for f in files]
    storage = io.Storage()
    base, t0 = peak_mb(), time.perf_counter()
    if mode == "worker":  # one chunk, as a phase-3 task sees it
        from raypipe.curate.aggregates import aggregate

        agg = aggregate(pq.read_table(files[0]), stats[0]["key"])
        size = len(json.dumps(agg))
        return {"mode": mode, "peak_mb": peak_mb(), "baseline_mb": base, "seconds": time.perf_counter() - t0,
                "aggregate_json_bytes": size}
    if mode == "driver":
        from raypipe.curate.aggregates import merge

        aggs_dir = Path(out) / "aggs"
        merged = merge([])
        for f in sorted(aggs_dir.glob("*.json")):  # as the tasks' results arrive
            merged = merge([merged, json.loads(f.read_text())])
        manifest = build_manifest(config, [s["uri"] for s in stats], stats, merged, None, policy, 1.0)
        write_report(manifest, merged, policy, str(Path(out) / "report.html"), storage)
    else:  # rows: the report columns of every record in the driver (the code before aggregates)
        from collections import Counter

        import pyarrow as pa

        cols = ["source", "verdict", "branch_ratio", "n_steps", "n_tokens", "markup", "answer_source", "final_chars",
                "unconsumed_text", "shard", "row", "record", "id", "content_hash", "input_id", "duplicate_of"]
        ranks = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
        decisions: Counter = Counter()
        for f in files:
            d = pq.read_table(f, columns=["source", "decision"])
            g = d.group_by(["source", "decision"]).aggregate([([], "count_all")])
            for s, dd, n in zip(*(g.column(c).to_pylist() for c in ("source", "decision", "count_all"))):
                decisions[(s, dd)] += n
        manifest = build_manifest(config, [s["uri"] for s in stats], stats, ranks, None, policy, decisions, 1.0)
        write_report(manifest, ranks, policy, str(Path(out) / "report.html"), storage)
    return {"mode": mode, "peak_mb": peak_mb(), "baseline_mb": base, "seconds": time.perf_counter() - t0,
            "by_source": {s: {k: v[k] for k in ("records", "branch_ratio_quantiles", "quantiles") if k in v}
                          for s, v in manifest["by_source"].items()}}


def run_child(mode: str, files: list[str], out: str, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--out", out, *files], env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--baseline-src", type=Path, help="a checkout of raypipe that builds the report from rows")
    ap.add_argument("--child")
    ap.add_argument("--out")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.files, a.out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = make_chunks(Path(tmp), a.rows, a.chunk)
        out = Path(tmp) / "out"
        (out / "aggs").mkdir(parents=True)
        sys.path.insert(0, str(ROOT))
        import pyarrow.parquet as pq

        from raypipe.curate.aggregates import aggregate

        t0 = time.perf_counter()
        for f in files:  # the phase-3 tasks' share, done here in turn
            (out / "aggs" / f"{Path(f).stem}.json").write_text(json.dumps(aggregate(pq.read_table(f), Path(f).stem)))
        print(f"{a.rows} rows in {len(files)} chunks; aggregating all chunks took {time.perf_counter() - t0:.1f}s")
        results = [run_child("worker", files, str(out), ROOT), run_child("driver", files, str(out), ROOT)]
        if a.baseline_src:
            results.append(run_child("rows", files, str(out), a.baseline_src))
        for r in results:
            extra = {k: v for k, v in r.items() if k not in ("mode", "peak_mb", "baseline_mb", "seconds", "by_source")}
            print(f"{r['mode']:>7}: peak RSS {r['peak_mb']:.0f} MB ({r['peak_mb'] - r['baseline_mb']:+.0f} MB over "
                  f"the imports), {r['seconds']:.1f}s {extra or ''}")
        for r in results:
            if "by_source" in r:
                print(r["mode"], json.dumps(r["by_source"])[:1500])


if __name__ == "__main__":
    main()
