"""raypipe serve: the online filter scorer (Ray Serve + FastAPI) with the thresholds of a curation run."""
from __future__ import annotations

import argparse
import sys

EXTRA = {
    "host": "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    "port": "HTTP port (default 8000)",
    "route_prefix": "route prefix of the application (default /)",
    "num_cpus": "CPUs for a local Ray (ignored when joining a cluster through RAY_ADDRESS)",
    "ingress": "direct (default): each replica serves HTTP itself at --port (Ray Serve's direct ingress, the "
               "fastest path; a second replica takes --port+1, ...); haproxy: HAProxy at --port in front of the "
               "replicas (binds their ports on every interface); proxy: Ray Serve's Python proxy at --port",
    "metrics_export_port": "Prometheus port of the local Ray's metrics export (default: Ray picks one)",
}
INGRESS_MODES = ("direct", "haproxy", "proxy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="a curation run's manifest.json or output folder (local or s3://)")
    p.add_argument("--host", default="127.0.0.1", help=EXTRA["host"])
    p.add_argument("--port", type=int, default=8000, help=EXTRA["port"])
    p.add_argument("--route-prefix", default="/", help=EXTRA["route_prefix"])
    p.add_argument("--num-cpus", type=int, help=EXTRA["num_cpus"])
    p.add_argument("--ingress", choices=INGRESS_MODES, default="direct", help=EXTRA["ingress"])
    p.add_argument("--metrics-export-port", type=int, help=EXTRA["metrics_export_port"])
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", help="S3 region (else AWS_REGION)")
    p.add_argument("--allow-version-mismatch", action="store_true", default=None,
                   help="serve a manifest written with other lexicon/verifier versions")
    p.add_argument("--replicas", type=int, help="replicas (default 1)")
    p.add_argument("--replica-cpus", type=float, help="CPUs reserved per replica (default 1)")
    p.add_argument("--max-ongoing-requests", type=int, help="scoring requests one replica holds at once (default 64)")
    p.add_argument("--max-queued-requests", type=int,
                   help="requests a replica queues beyond those, then 503 + Retry-After (default 256; -1: no limit)")
    p.add_argument("--retry-after", dest="retry_after_s", type=float, help="Retry-After seconds on 503 (default 1)")
    p.add_argument("--batch-size", type=int, help="@serve.batch: single requests scored together (default 32)")
    p.add_argument("--batch-wait", dest="batch_wait_s", type=float, help="@serve.batch wait in seconds (default 0.002)")
    p.add_argument("--max-item-bytes", type=int, help="/v1/score body limit (default 8 MiB): 413 above it")
    p.add_argument("--max-batch-items", type=int, help="most items per /v1/score/batch request (default 256)")
    p.add_argument("--max-batch-bytes", type=int, help="/v1/score/batch body limit (default 64 MiB)")
    p.add_argument("--verify-workers", type=int, help="verifier worker processes per scoring thread (default 1)")
    p.add_argument("--scoring-threads", type=int, help="threads scoring at once in a replica, each with its own "
                   "Scorer (default 2)")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request (Serve access log)")
    p.add_argument("--default-source", help="source of rows that name none (default 'online')")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the online filter scorer over HTTP", description=__doc__,
                       epilog="Set RAYPIPE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/*.")
    add_arguments(p)
    p.set_defaults(func=run)


def ingress_env(mode: str, port: int, replicas: int) -> dict[str, str]:
    """Ray Serve's settings for an ingress mode. Serve reads them when it is imported, so they must be in the
    environment before Ray starts (for a cluster: in every node's environment)."""
    if mode == "proxy":
        return {}
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # direct ingress, gRPC between replicas, a frozen GC
           # a local server stops at once; behind a cluster's load balancer, keep Serve's default (30 s)
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    if mode == "direct":  # the replicas take --port, --port+1, ...: no proxy hop in front of them
        env.update(RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(port),
                   RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(port + replicas))
    else:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    return env


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout_s: float = 60.0) -> bool:
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from pydantic import ValidationError

    from raypipe import io
    from raypipe.online import ManifestError, load_plan

    skip = {"func", "command", "host", "port", "route_prefix", "num_cpus", "ingress", "metrics_export_port"}
    try:
        from raypipe.online_serve import ServeSettings

        settings = ServeSettings(**{k: v for k, v in vars(args).items() if k not in skip and v is not None})
        plan = load_plan(settings.manifest, io.Storage(settings.s3_endpoint, settings.s3_region),
                         allow_version_mismatch=settings.allow_version_mismatch)
    except (ValidationError, ManifestError, OSError) as e:
        print(f"raypipe serve: {e}", file=sys.stderr)
        return 2

    from raypipe.ray_env import in_cluster_job

    joining = in_cluster_job()
    if joining:
        if args.ingress != "proxy":
            print(f"[raypipe] joining a running cluster: its nodes' environment decides the ingress; for "
                  f"--ingress {args.ingress} start them with {ingress_env(args.ingress, args.port, settings.replicas)}",
                  flush=True)
    else:
        cpus = args.num_cpus or os.cpu_count() or 1
        need = settings.replicas * settings.replica_cpus
        if need > cpus:
            print(f"raypipe serve: {settings.replicas} replicas x {settings.replica_cpus:g} CPUs need {need:g} CPUs; "
                  f"the local Ray has {cpus}", file=sys.stderr)
            return 2
        for k, v in ingress_env(args.ingress, args.port, settings.replicas).items():
            os.environ.setdefault(k, v)

    from ray import serve

    from raypipe.online_serve import APP_NAME, build_app
    from raypipe.ray_env import ensure_ray

    stop = threading.Event()

    def on_signal():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    on_signal()  # before Ray starts (a signal during startup still shuts down), again after (Ray installs its own)
    ensure_ray(args.num_cpus, metrics_export_port=args.metrics_export_port)
    on_signal()
    # In direct mode Serve's own proxy still runs; it gets a free port so that the replicas can take --port.
    proxy_port = _free_port(args.host) if args.ingress == "direct" and not joining else args.port
    serve.start(http_options={"host": args.host, "port": proxy_port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix=args.route_prefix)
    prefix = args.route_prefix.rstrip("/")
    base = f"http://{args.host}:{args.port}{prefix}"
    if not _wait_ready(base + "/healthz"):
        print(f"raypipe serve: the application started but {base}/healthz does not answer", file=sys.stderr)
    print(f"[raypipe] scoring with {plan.uri} (config {plan.config_hash}) at {base}/v1/score "
          f"(ingress: {args.ingress})", flush=True)
    if args.ingress == "direct" and settings.replicas > 1:
        print(f"[raypipe] replicas listen on ports {args.port}..{args.port + settings.replicas - 1}", flush=True)
    if proxy_port != args.port:
        print(f"[raypipe] Ray Serve's proxy (a slower path to the same app) at http://{args.host}:{proxy_port}{prefix}",
              flush=True)
    print(f"[raypipe] try: curl -s {base}/healthz ; OpenAPI at {base}/openapi.json ; Ctrl-C or SIGTERM stops",
          flush=True)
    while not stop.wait(1.0):
        pass
    if joining:
        serve.delete(APP_NAME)
    else:
        serve.shutdown()
    return 0
