"""The loss-probe job on Ray Data: model actors score trajectories; the driver aggregates and reports."""
from __future__ import annotations

import json
import time
from typing import Literal

import pyarrow as pa
from pydantic import Field

from raypipe.core import io
from raypipe.diagnostics.loss import LOSS_EDGES, PROBE_VERSION, LossProbe
from raypipe.train.config import RenderSettings

OUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("problem_id", pa.string()), ("branch_ratio", pa.float64()),
    ("error", pa.string()), ("n_tokens", pa.int64()), ("n_response_tokens", pa.int64()), ("truncated", pa.bool_()),
    ("mean_loss", pa.float64()), ("routine_share", pa.float64()), ("key_token_loss", pa.float64()),
    ("mean_entropy", pa.float64()), ("sum_loss", pa.float64()), ("sum_entropy", pa.float64()),
    ("n_routine", pa.int64()), ("sum_loss_key", pa.float64()), ("n_marker_tokens", pa.int64()),
    ("n_markers", pa.int64()), ("sum_loss_marker", pa.float64()), ("sum_entropy_marker", pa.float64()),
    ("decile_count", pa.list_(pa.int64())), ("decile_sum_loss", pa.list_(pa.float64())),
    ("decile_sum_entropy", pa.list_(pa.float64())), ("loss_hist", pa.list_(pa.int64())),
    ("token_loss", pa.list_(pa.float32())),
])


class LossConfig(RenderSettings):
    """The loss probe's settings; template, think_open and think_close render the trajectories as SFT does."""

    input: str = Field(description="trajectories (file, folder, glob; local or s3://) or a curation output folder")
    output: str = Field(description="output folder: trajectories/ (Parquet), summary.json, report.html")
    model: str = Field("tiny", description="causal LM checkpoint folder (e.g. an SFT job's <output>/model) or 'tiny'")
    window: int = Field(1024, gt=1, description="tokens per forward pass; the KV cache carries the prefix")
    max_tokens: int | None = Field(None, gt=1, description="score at most this many tokens of prompt + response "
                                   "(default: the model's context)")
    routine_threshold: float = Field(0.05, gt=0, description="loss (nats) below which a token counts as routine")
    lexicon: str = Field("paper", description="branch-marker lexicon: paper, switch, paper-zh or a YAML file")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bfloat16 on GPU, "
                                                                     "float32 on CPU")
    limit: int | None = Field(None, gt=0, description="only the first N trajectories")
    keep_token_losses: bool = Field(False, description="also store every token's loss")
    batch_size: int = Field(8, gt=0, description="trajectories per actor call (results do not depend on it)")
    actors: int | None = Field(None, description="model actors (default: one per GPU, else CPUs - 1)")
    gpus_per_actor: float | None = Field(None, ge=0, description="GPUs per actor (default 1 when the cluster has "
                                         "GPUs)")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    s3_region: str | None = Field(None, description="S3 region")

    def probe(self) -> LossProbe:
        return LossProbe(self.model, self.window, self.max_tokens, self.routine_threshold, self.lexicon,
                         dtype=self.dtype, keep_token_losses=self.keep_token_losses, template=self.template,
                         think_open=self.think_open, think_close=self.think_close,
                         prompt_version=self.prompt_version)


class ProbeActor:
    def __init__(self, config: dict):
        self.probe = LossConfig(**config).probe().setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for r in batch.to_pylist():
            if r["error"] is not None:
                rows.append({k: r.get(k) for k in ("id", "source", "problem_id", "branch_ratio", "error")})
            else:
                rows.append(self.probe.measure(r))
        return pa.Table.from_pylist(rows, schema=OUT_SCHEMA)


def run_loss_probe(config: LossConfig) -> dict:
    import ray

    from raypipe.diagnostics.dataset import read_trajectories
    from raypipe.diagnostics.loss_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_loss_report
    from raypipe.ray_env import actor_pool, ensure_ray
    from raypipe.tiny import resolve_model

    t0 = time.time()
    ensure_ray(config.num_cpus)
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    if config.model == "tiny":
        resolve_model("tiny")  # build it once here, not in every actor at the same time
    ds, uris = read_trajectories(config.input, storage, config.limit)
    pool = actor_pool(config.actors, gpus_per_actor=config.gpus_per_actor, reserve_cpus=1)
    print(f"[raypipe] loss-probe: {len(uris)} input files, {pool.size} model actors "
          f"({pool.num_gpus} GPU, {pool.num_cpus:g} CPU each) -> {config.output}", flush=True)
    scored = ds.map_batches(ProbeActor, fn_constructor_kwargs={"config": config.model_dump()},
                            batch_size=config.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=pool.size), num_cpus=pool.num_cpus,
                            num_gpus=pool.num_gpus or None)
    traj_uri = io.join(config.output, "trajectories")
    io.remove_tree(traj_uri, storage)
    fs, path = storage.filesystem(traj_uri)
    scored.write_parquet(path, filesystem=fs)
    table = io.read_parquet_dir(traj_uri, storage, columns=SUMMARY_COLUMNS)
    summary = {
        "probe": PROBE_VERSION,
        "config": config.model_dump(),
        "assistant_format": config.assistant_format().layout,
        "inputs": uris,
        "rows": table.num_rows if table is not None else 0,
        "sources": source_summary(table, config.routine_threshold) if table is not None else {},
        "loss_edges": LOSS_EDGES.tolist(),
        "definitions": {
            "mean_loss": "token-weighted mean loss (nats) over the scored tokens of the assistant turn, rendered "
                         "from the canonical reasoning and final part as SFT renders it",
            "routine_share": f"share of tokens with loss < {config.routine_threshold} nats",
            "key_token_loss": "mean loss of the non-routine tokens (loss >= the routine threshold)",
            "marker_loss": f"mean loss of tokens overlapping a '{config.lexicon}' branch marker in the reasoning",
        },
        "seconds": round(time.time() - t0, 2),
    }
    io.write_text(json.dumps(summary, indent=1), io.join(config.output, "summary.json"), storage)
    write_loss_report(summary, io.join(config.output, "report.html"), storage)
    print(f"[raypipe] loss-probe done in {summary['seconds']}s: {summary['rows']} trajectories; "
          f"report {io.join(config.output, 'report.html')}", flush=True)
    return summary
