"""The loss-probe job on Ray Data: model actors score trajectories; the driver aggregates and reports."""
from __future__ import annotations

import json
import time

import pyarrow as pa
from pydantic import BaseModel, Field

from raypipe import io
from raypipe.diagnostics.loss import LOSS_EDGES, PROBE_VERSION, LossProbe

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


class LossConfig(BaseModel):
    input: str = Field(description="trajectories (any curate input) or a curation output folder")
    output: str
    model: str = "tiny"
    window: int = Field(1024, gt=1, description="tokens per forward pass (the KV cache carries the prefix)")
    max_tokens: int | None = Field(None, gt=1, description="score at most this many tokens (prompt + response)")
    routine_threshold: float = Field(0.05, gt=0, description="tokens below this loss (nats) are 'routine'")
    lexicon: str = "paper"
    dtype: str = "auto"
    limit: int | None = Field(None, gt=0)
    keep_token_losses: bool = False
    batch_size: int = Field(8, gt=0)
    actors: int | None = None
    gpus_per_actor: float | None = None
    num_cpus: int | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None

    def probe(self) -> LossProbe:
        return LossProbe(self.model, self.window, self.max_tokens, self.routine_threshold, self.lexicon,
                         dtype=self.dtype, keep_token_losses=self.keep_token_losses)


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

    from raypipe.diagnostics.dataset import actor_plan, read_trajectories
    from raypipe.diagnostics.loss_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_loss_report
    from raypipe.ray_env import ensure_ray
    from raypipe.tiny import resolve_model

    t0 = time.time()
    ensure_ray(config.num_cpus)
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    if config.model == "tiny":
        resolve_model("tiny")  # build it once here, not in every actor at the same time
    ds, uris = read_trajectories(config.input, storage, config.limit)
    plan = actor_plan(config.actors, config.gpus_per_actor)
    print(f"[raypipe] loss-probe: {len(uris)} input files, {plan['size']} model actors "
          f"({plan['num_gpus']} GPU, {plan['num_cpus']:g} CPU each) -> {config.output}", flush=True)
    scored = ds.map_batches(ProbeActor, fn_constructor_kwargs={"config": config.model_dump()},
                            batch_size=config.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=plan["size"]), num_cpus=plan["num_cpus"],
                            num_gpus=plan["num_gpus"] or None)
    traj_uri = io.join(config.output, "trajectories")
    io.remove_tree(traj_uri, storage)
    fs, path = storage.filesystem(traj_uri)
    scored.write_parquet(path, filesystem=fs)
    table = io.read_parquet_dir(traj_uri, storage, columns=SUMMARY_COLUMNS)
    summary = {
        "probe": PROBE_VERSION,
        "config": config.model_dump(),
        "inputs": uris,
        "rows": table.num_rows if table is not None else 0,
        "sources": source_summary(table, config.routine_threshold) if table is not None else {},
        "loss_edges": LOSS_EDGES.tolist(),
        "definitions": {
            "mean_loss": "token-weighted mean loss (nats) over the scored response tokens",
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
