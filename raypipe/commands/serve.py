"""raypipe serve: the online filter scorer (Ray Serve + FastAPI) with the thresholds of a curation run."""
from __future__ import annotations

import argparse
import sys

EXTRA = {
    "host": "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    "port": "HTTP port (default 8000)",
    "route_prefix": "route prefix of the application (default /)",
    "num_cpus": "CPUs for a local Ray (ignored when joining a cluster through RAY_ADDRESS)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="a curation run's manifest.json or output folder (local or s3://)")
    p.add_argument("--host", default="127.0.0.1", help=EXTRA["host"])
    p.add_argument("--port", type=int, default=8000, help=EXTRA["port"])
    p.add_argument("--route-prefix", default="/", help=EXTRA["route_prefix"])
    p.add_argument("--num-cpus", type=int, help=EXTRA["num_cpus"])
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", help="S3 region (else AWS_REGION)")
    p.add_argument("--allow-version-mismatch", action="store_true", default=None,
                   help="serve a manifest written with other lexicon/verifier versions")
    p.add_argument("--replicas", type=int, help="replicas (default 1)")
    p.add_argument("--replica-cpus", type=float, help="CPUs per replica (default 0.5)")
    p.add_argument("--max-ongoing-requests", type=int, help="requests inside one replica at once (default 64)")
    p.add_argument("--max-queued-requests", type=int, help="queued per proxy beyond those, then 503 (default 256)")
    p.add_argument("--retry-after", dest="retry_after_s", type=float, help="Retry-After seconds on 503 (default 1)")
    p.add_argument("--batch-size", type=int, help="@serve.batch: single requests scored together (default 32)")
    p.add_argument("--batch-wait", dest="batch_wait_s", type=float, help="@serve.batch wait in seconds (default 0.002)")
    p.add_argument("--max-item-bytes", type=int, help="/v1/score body limit (default 8 MiB): 413 above it")
    p.add_argument("--max-batch-items", type=int, help="most items per /v1/score/batch request (default 256)")
    p.add_argument("--max-batch-bytes", type=int, help="/v1/score/batch body limit (default 64 MiB)")
    p.add_argument("--verify-workers", type=int, help="verifier worker processes per replica (default 1)")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request (Serve access log)")
    p.add_argument("--default-source", help="source of rows that name none (default 'online')")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the online filter scorer over HTTP", description=__doc__,
                       epilog="Set RAYPIPE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/*.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pydantic import ValidationError

    from raypipe import io
    from raypipe.online import ManifestError, load_plan
    from raypipe.online_serve import APP_NAME, ServeSettings, build_app

    skip = {"func", "command", "host", "port", "route_prefix", "num_cpus"}
    try:
        settings = ServeSettings(**{k: v for k, v in vars(args).items() if k not in skip and v is not None})
        plan = load_plan(settings.manifest, io.Storage(settings.s3_endpoint, settings.s3_region),
                         allow_version_mismatch=settings.allow_version_mismatch)
    except (ValidationError, ManifestError, OSError) as e:
        print(f"raypipe serve: {e}", file=sys.stderr)
        return 2

    from ray import serve

    from raypipe.ray_env import ensure_ray, in_cluster_job

    stop = threading.Event()

    def on_signal():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    on_signal()  # before Ray starts (a signal during startup still shuts down), again after (Ray installs its own)
    ensure_ray(args.num_cpus)
    on_signal()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix=args.route_prefix)
    base = f"http://{args.host}:{args.port}{args.route_prefix.rstrip('/')}"
    print(f"[raypipe] scoring with {plan.uri} (config {plan.config_hash}) at {base}/v1/score", flush=True)
    print(f"[raypipe] try: curl -s {base}/healthz ; OpenAPI at {base}/openapi.json ; Ctrl-C or SIGTERM stops",
          flush=True)
    while not stop.wait(1.0):
        pass
    if in_cluster_job():
        serve.delete(APP_NAME)
    else:
        serve.shutdown()
    return 0
