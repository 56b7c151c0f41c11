"""Joining or starting Ray: a submitted job joins its cluster; a local run starts a small local instance."""
from __future__ import annotations

import logging
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


class InProcessSettings(SettingsGroup):
    in_process_below_mb: float = Field(128, ge=0, description="an input smaller than this many MB is processed in "
                                       "this process: curated or judged without starting Ray when there is no cluster "
                                       "to join (a Ray this process started does not change that), tokenized for SFT "
                                       "without an actor pool; the same outputs (0: always on Ray)")


class ActorPoolSettings(SettingsGroup):
    actors: int | None = Field(None, description="a fixed number of actors in the command's pool (default: "
                               "sized from the cluster)")


def in_cluster_job() -> bool:
    return bool(os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_SUBMISSION_ID"))


# A Ray that raypipe starts serves this process alone: on 127.0.0.1 only, and without a token (Ray 2.60 turns
# token auth on for a new local instance, warns about it on every start, and leaves ~/.ray/auth_token behind, which
# then breaks a later `ray job submit` against a `ray start` head). Ray reads the first when it is imported.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def local_ray_defaults() -> None:
    """LOCAL_RAY_ENV where this process will start its own Ray (no cluster to join); call it before Ray is
    imported. A value set in the environment wins."""
    if not in_cluster_job():
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)


def ray_running() -> bool:
    """Ray is initialised in this process (asked without importing Ray when nothing has)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def ensure_ray(num_cpus: int | None = None, address: str | None = None, object_store_mb: int = 1024,
               metrics_export_port: int | None = None, plugins: list[str] | tuple[str, ...] = ()) -> None:
    """Connect to the cluster named by `address` / RAY_ADDRESS, else start a local Ray sized for this machine.

    A local Ray ships the `plugins` modules to its workers. A submitted job's plugins come with its own runtime_env
    (`--working-dir`, or `py_modules`), which Ray puts on every worker.
    """
    if ray_running():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        local_ray_defaults()
    import ray

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


class DropMessage(logging.Filter):
    """Drops the log records whose message starts with one of `prefixes`; every other record passes."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextmanager
def without_message(logger: str, *prefixes: str) -> Iterator[None]:
    """A logger's records starting with `prefixes` dropped for the block (a known message that misleads where it
    is expected, such as Serve's 'Connecting to existing Serve app' right after raypipe started Serve itself)."""
    drop = DropMessage(*prefixes)
    log = logging.getLogger(logger)
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


_DATA_LEVELS: list[int | None] = []  # per open quiet_ray block, the Ray Data log level it restores (None: not lowered)


def quiet_data_logs() -> None:
    """Inside a quiet_ray block, Ray Data's logger lowered to errors; call it once ray.data is imported (its import
    sets its loggers up, at info). The import costs 0.5 s, so a job that uses no dataset never pays it."""
    if _DATA_LEVELS and _DATA_LEVELS[-1] is None:
        data_log = logging.getLogger("ray.data")
        _DATA_LEVELS[-1] = data_log.level
        data_log.setLevel(logging.ERROR)


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray Data's per-operator logs and bars off (a job prints its own progress), and the known spurious lines
    (SPURIOUS) filtered out of this process's stderr; everything else passes through unchanged."""
    import threading

    _DATA_LEVELS.append(None)
    if "ray.data" in sys.modules:
        quiet_data_logs()
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
        level = _DATA_LEVELS.pop()
        if level is not None:
            logging.getLogger("ray.data").setLevel(level)
