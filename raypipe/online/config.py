"""Settings of the scoring endpoint: the application's own (`args:` of serve/config.yaml) and `raypipe serve`'s."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field

from raypipe.core.io import StorageSettings
from raypipe.core.scoring import VerifierSettings
from raypipe.core.settings import BatchSettings, HttpSettings, ReplicaCpuSettings, ReplicaSettings, Settings
from raypipe.ray_env import LocalRaySettings

INGRESS_MODES = ("direct", "haproxy", "proxy")


class ServeSettings(Settings, StorageSettings, VerifierSettings, BatchSettings, ReplicaSettings, ReplicaCpuSettings):
    """Everything the scoring application is configured with (`raypipe serve` flags, or `args:` in
    serve/config.yaml)."""

    DEFAULTS: ClassVar[dict] = {"batch_size": 32}
    HELP: ClassVar[dict] = {"batch_size": "@serve.batch: most single requests scored together",
                            "verify_workers": "verifier worker processes per scoring thread",
                            "replicas": "scorer replicas",
                            "replica_cpus": "CPUs reserved per replica (its verifier workers run inside)"}

    manifest: str = Field(description="a curation run's manifest.json, or its output folder; local or s3://")
    allow_version_mismatch: bool = Field(False, description="serve a manifest written by other lexicon/verifier "
                                         "versions")
    default_source: str = Field("online", description="source of rows that name none (gets the default threshold)")
    max_item_bytes: int = Field(8 << 20, gt=0, description="body limit of /v1/score (413 above it)")
    max_batch_items: int = Field(256, gt=0, description="most items in one /v1/score/batch request")
    max_batch_bytes: int = Field(64 << 20, gt=0, description="body limit of /v1/score/batch")
    batch_wait_s: float = Field(0.002, ge=0, description="@serve.batch: seconds a batch waits to fill",
                                validation_alias=AliasChoices("batch_wait_s", "batch_wait"))
    scoring_threads: int = Field(2, ge=1, description="threads that score at once in a replica, each with its own "
                                 "Scorer: Arrow's kernels release the GIL, so large batches overlap on two cores")
    max_ongoing_requests: int = Field(64, gt=0, description="scoring requests a replica holds at once")
    max_queued_requests: int = Field(256, ge=-1, description="requests a replica queues beyond those; then 503 "
                                     "with Retry-After (-1: no limit)")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After seconds on 503",
                                 validation_alias=AliasChoices("retry_after_s", "retry_after"))
    access_log: bool = Field(False, description="Serve's per-request log lines (metrics count requests either way)")


class ServeCommandSettings(ServeSettings, HttpSettings, LocalRaySettings):
    """`raypipe serve`: the application's settings, and where and how this process serves it."""

    ingress: Literal[INGRESS_MODES] = Field(  # type: ignore[valid-type]
        "direct", description="direct: each replica serves HTTP itself at --port (Ray Serve's direct ingress, the "
        "fastest path; a second replica takes --port+1, ...); haproxy: HAProxy at --port in front of the replicas "
        "(binds their ports on every interface); proxy: Ray Serve's Python proxy at --port")
    metrics_export_port: int | None = Field(None, description="Prometheus port of the local Ray's metrics export "
                                            "(default: Ray picks one)")

    def app_settings(self) -> ServeSettings:
        return ServeSettings(**self.model_dump(include=set(ServeSettings.model_fields)))
