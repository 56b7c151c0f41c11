"""raypipe serve: the online filter scorer (Ray Serve + FastAPI) with the thresholds of a curation run.

Set RAYPIPE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/*."""
from __future__ import annotations

import sys

from raypipe.commands import Command, refusing
from raypipe.online.config import ServeCommandSettings


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


def run(config: ServeCommandSettings) -> int:
    import os
    import signal
    import threading

    from raypipe.core import io
    from raypipe.online.scorer import ManifestError, load_run

    settings = config.app_settings()
    with refusing(ManifestError, OSError):
        run_ = load_run(settings.manifest, io.Storage(settings.s3_endpoint, settings.s3_region),
                        allow_version_mismatch=settings.allow_version_mismatch)

    from raypipe.ray_env import in_cluster_job

    joining = in_cluster_job()
    if joining:
        if config.ingress != "proxy":
            print(f"[raypipe] joining a running cluster: its nodes' environment decides the ingress; for "
                  f"--ingress {config.ingress} start them with "
                  f"{ingress_env(config.ingress, config.port, settings.replicas)}", flush=True)
    else:
        cpus = config.num_cpus or os.cpu_count() or 1
        need = settings.replicas * settings.replica_cpus
        if need > cpus:
            print(f"raypipe serve: {settings.replicas} replicas x {settings.replica_cpus:g} CPUs need {need:g} CPUs; "
                  f"the local Ray has {cpus}", file=sys.stderr)
            return 2
        for k, v in ingress_env(config.ingress, config.port, settings.replicas).items():
            os.environ.setdefault(k, v)

    from ray import serve

    from raypipe.online.app import APP_NAME, build_app
    from raypipe.ray_env import ensure_ray, without_message

    stop = threading.Event()

    def on_signal():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    on_signal()  # before Ray starts (a signal during startup still shuts down), again after (Ray installs its own)
    ensure_ray(config.num_cpus, metrics_export_port=config.metrics_export_port, plugins=config.plugins)
    on_signal()
    # In direct mode Serve's own proxy still runs; it gets a free port so that the replicas can take --port.
    proxy_port = _free_port(config.host) if config.ingress == "direct" and not joining else config.port
    serve.start(http_options={"host": config.host, "port": proxy_port})
    # serve.run connects to the Serve just started (with these http_options); its INFO line saying that it
    # connected to an existing app and will not apply new options is about that Serve, and misleads here.
    with without_message("ray.serve", "Connecting to existing Serve app"):
        serve.run(build_app(settings), name=APP_NAME, route_prefix=config.route_prefix)
    prefix = config.route_prefix.rstrip("/")
    base = f"http://{config.host}:{config.port}{prefix}"
    if not _wait_ready(base + "/healthz"):
        print(f"raypipe serve: the application started but {base}/healthz does not answer", file=sys.stderr)
    print(f"[raypipe] scoring with {run_.uri} (config {run_.config_hash}) at {base}/v1/score "
          f"(ingress: {config.ingress})", flush=True)
    if config.ingress == "direct" and settings.replicas > 1:
        print(f"[raypipe] replicas listen on ports {config.port}..{config.port + settings.replicas - 1}", flush=True)
    if proxy_port != config.port:
        print(f"[raypipe] Ray Serve's proxy (a slower path to the same app) at "
              f"http://{config.host}:{proxy_port}{prefix}", flush=True)
    print(f"[raypipe] try: curl -s {base}/healthz ; OpenAPI at {base}/openapi.json ; Ctrl-C or SIGTERM stops",
          flush=True)
    while not stop.wait(1.0):
        pass
    if joining:
        serve.delete(APP_NAME)
    else:
        serve.shutdown()
    return 0


COMMAND = Command("serve", "serve the online filter scorer over HTTP", ServeCommandSettings, run,
                  description=__doc__,
                  example="raypipe serve --manifest out/curated/manifest.json --port 8000")
