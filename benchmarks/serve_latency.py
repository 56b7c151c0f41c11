"""Online scorer latency and throughput, in one run, on 50 KB trajectories made from the real shared data.

    .venv/bin/python benchmarks/serve_latency.py [--manifest RUN/manifest.json] [--seconds 20]

Measures (1) the in-process OnlineScorer (the batch job's Scorer) one row at a time and in batches, (2) the
HTTP endpoint's p50/p99 latency at 50 and 100 requests/s (open loop), (3) the batch route's throughput, then
prints the ratios and the targets (p99 <= 25 ms at 100 req/s; batch route >= 80 % of in-process throughput).
Without --manifest it first curates ../shared/data/trajectories into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SIZE = 50_000


def fifty_kb_rows(n: int) -> list[dict]:
    """Real rows cut to about 50 KB at a paragraph boundary of the reasoning; the final part is kept whole."""
    from raypipe.schema import split_reasoning

    files = sorted((SHARED / "trajectories").glob("*.jsonl")) + sorted((SHARED / "r1").glob("*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    out = []
    for row in rows:
        resp = row["response"]
        if len(resp.encode()) < SIZE:
            continue
        split = split_reasoning(resp)
        tail = resp[split.thinking_end:] if split.complete else ""
        keep = SIZE - len(tail.encode())
        head = resp[:split.thinking_end].encode()[:keep].decode("utf-8", "ignore")
        head = head[:head.rfind("\n\n")] if "\n\n" in head else head
        out.append({**row, "response": head + ("\n" if split.complete else "") + tail})
    return [{**out[i % len(out)], "id": f"bench-{i}"} for i in range(n)]


def in_process(manifest: str, rows: list[dict], seconds: float) -> dict:
    from raypipe.online import OnlineScorer, load_plan

    scorer = OnlineScorer(load_plan(manifest)).setup()
    try:
        scorer.score_rows(rows)  # warm: verifier workers started, answers cached as in a long-running replica
        lat, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            for row in rows:
                t = time.perf_counter()
                scorer.score_rows([row])
                lat.append(1000 * (time.perf_counter() - t))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            for i in range(0, len(rows), 64):
                n += len(scorer.score_rows(rows[i:i + 64]))
        batched = n / (time.perf_counter() - t0)
    finally:
        scorer.close()
    lat.sort()
    return {"single_p50_ms": lat[len(lat) // 2], "single_p99_ms": lat[int(0.99 * len(lat))],
            "single_rows_per_s": 1000 * len(lat) / sum(lat), "batched_rows_per_s": batched}


def batch_route(url: str, rows: list[dict], seconds: float, clients: int = 2, size: int = 64) -> float:
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    bodies = [json.dumps({"items": rows[i:i + size]}).encode() for i in range(0, len(rows) - size + 1, size)]
    deadline = time.perf_counter() + seconds

    def loop(k: int) -> int:
        n = 0
        with httpx.Client(timeout=120, headers={"content-type": "application/json"}) as c:
            while time.perf_counter() < deadline:
                r = c.post(url, content=bodies[(n // size + k) % len(bodies)])
                r.raise_for_status()
                n += len(r.json()["results"])
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(loop, range(clients)))
    return total / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", help="a curation run's manifest.json (default: curate the shared data first)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measurement (default 20)")
    ap.add_argument("--replicas", type=int, default=2, help="scorer replicas (default 2: one per core here)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients on the batch route (default 4)")
    ap.add_argument("--batch-items", type=int, default=256, help="items per batch-route request (default 256)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray
    from ray import serve

    from raypipe.loadgen import fixed_rate
    from raypipe.online_serve import ServeSettings, build_app

    rows = fifty_kb_rows(256)
    print(f"{len(rows)} trajectories of {min(len(json.dumps(r).encode()) for r in rows) / 1e3:.0f}-"
          f"{max(len(json.dumps(r).encode()) for r in rows) / 1e3:.0f} KB (JSON); cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}", flush=True)
    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=1 << 30, include_dashboard=False,
             log_to_driver=False)
    try:
        manifest = args.manifest
        if not manifest:
            from raypipe.config import CurateConfig
            from raypipe.pipeline import run_curate

            out = tempfile.mkdtemp(prefix="serve-bench-")
            run_curate(CurateConfig(input=str(SHARED / "trajectories"), output=out))
            manifest = os.path.join(out, "manifest.json")

        local = in_process(manifest, rows, args.seconds)
        print("in-process:", {k: round(v, 2) for k, v in local.items()}, flush=True)

        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ServeSettings(manifest=manifest, replicas=args.replicas)), name="bench", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        bodies = [json.dumps(r).encode() for r in rows]
        fixed_rate(base + "/v1/score", bodies, 20, 3)  # warm: verifier cache, connections
        endpoint = {}
        for rate in (50, 100):
            endpoint[rate] = fixed_rate(base + "/v1/score", bodies, rate, args.seconds).summary()
            print(f"endpoint at {rate} req/s:", endpoint[rate], flush=True)
        route = batch_route(base + "/v1/score/batch", rows, args.seconds, args.clients, args.batch_items)
        print(f"batch route: {route:.1f} rows/s (batches of {args.batch_items}, {args.clients} clients)", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    p99 = endpoint[100]["p99_ms"]
    ratio = route / local["batched_rows_per_s"]
    print(f"\n== summary (50 KB trajectories; {args.replicas} replicas; load average now {os.getloadavg()[0]:.1f}) ==")
    print(f"in-process single row: p50 {local['single_p50_ms']:.2f} ms, p99 {local['single_p99_ms']:.2f} ms")
    print(f"in-process batched:    {local['batched_rows_per_s']:.0f} rows/s")
    for rate in (50, 100):
        e = endpoint[rate]
        print(f"endpoint {rate:>3} req/s:   p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms "
              f"({e['answered']}/{e['sent']} answered, {e['skipped']} skipped, statuses {e['statuses']}); "
              f"p50 / in-process p50 = {e['p50_ms'] / local['single_p50_ms']:.1f}x")
    print(f"batch route:           {route:.0f} rows/s = {100 * ratio:.0f} % of in-process batched "
          f"({args.batch_items} items a request, {args.clients} clients)")
    print(f"target p99 <= 25 ms at 100 req/s: {'met' if p99 <= 25 else 'NOT met'} ({p99:.1f} ms)")
    print(f"target batch route >= 80 % of in-process: {'met' if ratio >= 0.8 else 'NOT met'} ({100 * ratio:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
