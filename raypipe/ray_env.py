"""Joining or starting Ray: a submitted job joins its cluster; a local run starts a small local instance."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from pydantic import AliasChoices, Field

from raypipe.core.settings import SettingsGroup


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the block: joined or started (ensure_ray); a local Ray started here is shut down after it, so the
    stages that follow start their own."""
    import ray

    started = not ray.is_initialized()
    ensure_ray(num_cpus)
    try:
        yield
    finally:
        if started and not in_cluster_job():
            ray.shutdown()


class LocalRaySettings(SettingsGroup):
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)",
                                 validation_alias=AliasChoices("num_cpus", "ray_cpus"))


class ActorPoolSettings(SettingsGroup):
    actors: int | None = Field(None, description="a fixed number of actors in the command's pool (default: "
                               "sized from the cluster)")


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

    import ray.data  # noqa: F401  (Ray Data sets its loggers up when first imported: before we lower them)

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
