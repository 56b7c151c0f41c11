"""Online scorer latency and throughput, in one run, on 50 KB trajectories made from the real shared data.

    .venv/bin/python benchmarks/serve_latency.py [--manifest RUN/manifest.json] [--seconds 20] [--variants ...]

Measures (1) the in-process OnlineScorer (the batch job's Scorer) one row at a time and in batches, then, for
each variant, a `raypipe serve` process started with the variant's flags (the first variant, `default`, has none:
the command's defaults): (2) its capacity (a closed loop of 4 clients), (3) p50/p99 latency at 50 and 100
requests/s (open loop), (4) the batch route's throughput (default variant only). Requests go through
raypipe.online.client with retries off. Prints one table, the ratios and the targets (p99 <= 25 ms at 100 req/s with no
error and nothing skipped, for the defaults; batch route >= 80 % of in-process throughput).
Without --manifest it first curates ../shared/data/trajectories into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SIZE = 50_000
VARIANTS = {
    "default": [],
    "proxy": ["--ingress", "proxy"],
    "proxy-2": ["--ingress", "proxy", "--replicas", "2", "--replica-cpus", "0.5"],
    "haproxy": ["--ingress", "haproxy"],
}
DESCRIBE = {
    "default": "raypipe serve defaults (direct ingress, 1 replica)",
    "proxy": "Ray Serve's Python proxy, 1 replica",
    "proxy-2": "Ray Serve's Python proxy, 2 replicas (the earlier benchmark's setup)",
    "haproxy": "HAProxy in front of 1 replica (binds every interface)",
}


def fifty_kb_rows(n: int) -> list[dict]:
    """Real rows cut to about 50 KB at a paragraph boundary of the reasoning; the final part is kept whole."""
    from raypipe.core.schema import split_reasoning

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
    from raypipe.online.scorer import OnlineScorer, load_run

    scorer = OnlineScorer(load_run(manifest)).setup()
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
            "batched_rows_per_s": batched}


def batch_route(base: str, rows: list[dict], seconds: float, clients: int, size: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from raypipe.online.client import ScoringClient
    from raypipe.online.loadgen import NO_RETRIES

    batches = [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)] or [rows]
    deadline = time.perf_counter() + seconds

    def loop(k: int) -> int:
        n = 0
        with ScoringClient(base, timeout_s=120, retry=NO_RETRIES) as client:
            while time.perf_counter() < deadline:
                n += len(client.score_batch(batches[(n // size + k) % len(batches)], batch_size=size))
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(loop, range(clients)))
    return total / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`raypipe serve` in its own process (and its own local Ray), stopped with SIGTERM."""

    def __init__(self, manifest: str, flags: list[str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "raypipe.cli", "serve", "--manifest", manifest,
                                      "--port", str(self.port), *flags], stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"raypipe serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"raypipe serve not ready after {timeout_s} s; see {self.log.name}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and everything it started (its Ray: proxy, replicas, verifiers)."""
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def measure(name: str, manifest: str, rows: list[dict], args, logs: Path, with_batch_route: bool) -> dict:
    from raypipe.online.loadgen import closed_loop, fixed_rate

    server = Server(manifest, VARIANTS[name], logs / f"serve-{name}.log")
    try:
        server.wait_ready()
        url = server.base + "/v1/score"
        bodies = [json.dumps(r).encode() for r in rows]
        closed_loop(url, bodies, 600, clients=4, max_requests=len(bodies))  # warm: every body once (verifier cache)
        capacity = closed_loop(url, bodies, min(10.0, args.seconds), clients=4).rate
        print(f"[{name}] capacity {capacity:.0f} req/s (closed loop, 4 clients)", flush=True)
        out = {"capacity": capacity}
        for rate in (50, 100):
            cpu0 = server.cpu_seconds()
            out[rate] = fixed_rate(url, bodies, rate, args.seconds).summary()
            out[rate]["server_cpu_ms_per_request"] = 1000 * (server.cpu_seconds() - cpu0) / max(1, out[rate]["sent"])
            print(f"[{name}] {rate} req/s: {out[rate]}", flush=True)
        if with_batch_route:
            out["batch_route"] = batch_route(server.base, rows, args.seconds, args.clients, args.batch_items)
            print(f"[{name}] batch route: {out['batch_route']:.0f} rows/s", flush=True)
    finally:
        server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", help="a curation run's manifest.json (default: curate the shared data first)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measurement (default 20)")
    ap.add_argument("--variants", default="default,proxy,proxy-2",
                    help=f"comma-separated, first is the reference: {', '.join(VARIANTS)} (default default,proxy,proxy-2)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients on the batch route (default 4)")
    ap.add_argument("--batch-items", type=int, default=256, help="items per batch-route request (default 256)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    rows = fifty_kb_rows(256)
    load0 = os.getloadavg()[0]
    print(f"{len(rows)} trajectories of {min(len(json.dumps(r).encode()) for r in rows) / 1e3:.0f}-"
          f"{max(len(json.dumps(r).encode()) for r in rows) / 1e3:.0f} KB (JSON); cpus={os.cpu_count()} "
          f"load={load0:.1f}", flush=True)
    logs = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    manifest = args.manifest
    if not manifest:
        subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(SHARED / "trajectories"),
                        "--output", str(logs / "run")], check=True, stdout=subprocess.DEVNULL)
        manifest = str(logs / "run" / "manifest.json")

    local = in_process(manifest, rows, args.seconds)
    print("in-process:", {k: round(v, 2) for k, v in local.items()}, flush=True)
    results = {v: measure(v, manifest, rows, args, logs, with_batch_route=(i == 0)) for i, v in enumerate(variants)}

    ref = results[variants[0]]
    route = ref["batch_route"]
    ratio = route / local["batched_rows_per_s"]
    print(f"\n== summary (50 KB trajectories; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} now; "
          f"logs in {logs}) ==")
    print(f"in-process single row: p50 {local['single_p50_ms']:.2f} ms, p99 {local['single_p99_ms']:.2f} ms")
    print(f"in-process batched:    {local['batched_rows_per_s']:.0f} rows/s\n")
    print("| variant | capacity (req/s) | 50 req/s p50 / p99 (ms) | 100 req/s p50 / p99 (ms) | 100 req/s errors, "
          "skipped | p50 at 100 / in-process p50 | server CPU per request at 100 req/s |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        r = results[v]
        e50, e100 = r[50], r[100]
        bad = e100["sent"] - e100["statuses"].get(200, 0)
        print(f"| {DESCRIBE[v]} | {r['capacity']:.0f} | {e50['p50_ms']:.1f} / {e50['p99_ms']:.1f} | "
              f"{e100['p50_ms']:.1f} / {e100['p99_ms']:.1f} | {bad}, {e100['skipped']} | "
              f"{e100['p50_ms'] / local['single_p50_ms']:.1f}x | {e100['server_cpu_ms_per_request']:.1f} ms |")
    print(f"\nbatch route ({DESCRIBE[variants[0]]}): {route:.0f} rows/s = {100 * ratio:.0f} % of in-process batched "
          f"({args.batch_items} items a request, {args.clients} clients)")
    e = ref[100]
    ok = e["p99_ms"] <= 25 and e["sent"] == e["statuses"].get(200, 0) and not e["skipped"]
    print(f"target p99 <= 25 ms at 100 req/s, 0 errors, 0 skipped ({variants[0]}): {'met' if ok else 'NOT met'} "
          f"(p99 {e['p99_ms']:.1f} ms, {e['sent'] - e['statuses'].get(200, 0)} errors, {e['skipped']} skipped)")
    print(f"target batch route >= 80 % of in-process: {'met' if ratio >= 0.8 else 'NOT met'} ({100 * ratio:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
