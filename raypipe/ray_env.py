"""Joining or starting Ray: a submitted job joins its cluster; a local run starts a small local instance."""
from __future__ import annotations

import os
from dataclasses import dataclass


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
