"""Joining or starting Ray: a submitted job joins its cluster; a local run starts a small local instance."""
from __future__ import annotations

import os


def in_cluster_job() -> bool:
    return bool(os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_SUBMISSION_ID"))


def ensure_ray(num_cpus: int | None = None, address: str | None = None, object_store_mb: int = 1024,
               metrics_export_port: int | None = None) -> None:
    """Connect to the cluster named by `address` / RAY_ADDRESS, else start a local Ray sized for this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address or os.environ.get("RAY_JOB_SUBMISSION_ID"):
        ray.init(address=address or "auto", log_to_driver=True)
        return
    extra = {"_metrics_export_port": metrics_export_port} if metrics_export_port else {}
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=object_store_mb << 20,
             include_dashboard=False, log_to_driver=True, **extra)
