"""Joining or starting Ray: a submitted job joins its cluster; a local run starts a small local instance."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


def in_cluster_job() -> bool:
    return bool(os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_SUBMISSION_ID"))


def ensure_ray(num_cpus: int | None = None, address: str | None = None, object_store_mb: int = 1024,
               metrics_export_port: int | None = None, plugins: list[str] | tuple[str, ...] = ()) -> None:
    """Connect to the cluster named by `address` / RAY_ADDRESS, else start a local Ray sized for this machine.

    A local Ray ships the `plugins` modules to its workers. A submitted job's plugins come with its own runtime_env
    (`--working-dir`, or `py_modules`), which Ray puts on every worker.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address or os.environ.get("RAY_JOB_SUBMISSION_ID"):
        ray.init(address=address or "auto", log_to_driver=True)
        return
    extra: dict = {"_metrics_export_port": metrics_export_port} if metrics_export_port else {}
    if plugin_paths(plugins):
        extra["runtime_env"] = {"py_modules": plugin_paths(plugins)}
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=object_store_mb << 20,
             include_dashboard=False, log_to_driver=True, **extra)


@dataclass(frozen=True)
class ActorPool:
    size: int
    num_cpus: float  # per actor
    num_gpus: float = 0.0  # per actor


def actor_pool(actors: int | None = None, work_items: int | None = None, num_cpus: int | None = None,
               gpus_per_actor: float | None = 0.0, reserve_cpus: int = 0) -> ActorPool:
    """The one actor-pool planner of raypipe's Ray Data jobs.

    With GPUs (`gpus_per_actor` > 0, or None when the cluster has any): one actor per `gpus_per_actor` GPUs.
    Else CPU actors: `actors`, or one per CPU (less `reserve_cpus`), at most one per work item, each with a
    fractional CPU that leaves room for Ray Data's own read and write tasks: a pool holding every CPU of a small
    machine deadlocks silently.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = num_cpus or res.get("CPU", 1), res.get("GPU", 0)
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if gpus_per_actor > 0:
        return ActorPool(actors or max(1, int(gpus / gpus_per_actor)), 1.0, gpus_per_actor)
    size = actors or max(1, min(int(cpus) - reserve_cpus, work_items or int(cpus)))
    return ActorPool(size, min(1.0, max(0.25, (cpus - 0.5) / size)))


def plugin_paths(plugins: list[str] | tuple[str, ...]) -> list[str]:
    """Files or folders of the plugin modules a config names, to ship to a local Ray's workers (runtime_env
    py_modules). Installed packages (under site-packages) are left out: every worker has them already."""
    import importlib
    import sys

    paths: list[str] = []
    for name in plugins:
        importlib.import_module(name)
        top = sys.modules[name.split(".")[0]]
        path = list(top.__path__)[0] if getattr(top, "__path__", None) else getattr(top, "__file__", None) or ""
        if path and "site-packages" not in path and path not in paths:
            paths.append(path)
    return paths


# Lines Ray 2.60 prints that are not about the job, so that a clean run prints no ERROR and no repeated warning:
# - the core worker's ERROR for every actor whose constructor takes an actor handle (ray-project/ray#57733);
# - Ray Train's placement-group cleaner, every few seconds, where a local Ray runs without the dashboard (its state
#   API): it cannot ask whether the controller lives, and keeps watching;
# - Ray Train's INFO line for every report, which repeats the metrics that metrics.jsonl holds.
SPURIOUS = (b"has constructor arguments in the object store and max_restarts > 0",
            b"Failed to query Ray Train Controller actor state", b"Reporting training result")


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray Data's per-operator logs and bars off (a job prints its own progress), and the known spurious lines
    (SPURIOUS) filtered out of this process's stderr; everything else passes through unchanged."""
    import logging
    import threading

    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while True:
            data = os.read(read_end, 65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            keep = [ln for ln in lines if not any(s in ln for s in SPURIOUS)]
            out = b"".join(ln + b"\n" for ln in keep)
            if b"\n" not in pending and b"\r" in pending:  # a progress bar's redraw: pass it on now
                out, pending = out + pending, b""
            if out:
                os.write(saved, out)
        if pending:
            os.write(saved, pending)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
        data_log.setLevel(level)
