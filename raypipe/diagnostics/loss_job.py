"""The loss-probe job on Ray Data: model actors score trajectories; the driver aggregates and reports."""
from __future__ import annotations

import json
import time
import pyarrow as pa

from raypipe.core import io
from raypipe.core.stage import Stage
from raypipe.diagnostics.config import LossConfig
from raypipe.diagnostics.loss import LOSS_EDGES, PROBE_VERSION

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


class ScoreLoss(Stage):
    """The loss probe as a stage: trajectories in, their token-level loss figures out (one model per copy)."""

    name = "loss-probe"
    reads = ("id", "source", "problem_id", "problem", "thinking", "final", "branch_ratio", "error")
    writes = tuple(OUT_SCHEMA.names)

    def __init__(self, config: LossConfig):
        self.config = config

    def setup(self) -> None:
        self.probe = self.config.probe().setup()

    def process(self, batch: pa.Table) -> pa.Table:
        rows = []
        for r in batch.to_pylist():
            if r["error"] is not None:
                rows.append({k: r.get(k) for k in ("id", "source", "problem_id", "branch_ratio", "error")})
            else:
                rows.append(self.probe.measure(r))
        return pa.Table.from_pylist(rows, schema=OUT_SCHEMA)


def run_loss_probe(config: LossConfig) -> dict:
    from raypipe.diagnostics.dataset import read_trajectories
    from raypipe.diagnostics.inputs import list_diagnostic_inputs
    from raypipe.diagnostics.loss_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_loss_report
    from raypipe.executor import RayExecutor
    from raypipe.ray_env import ensure_ray
    from raypipe.tiny import resolve_model

    t0 = time.time()
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    uris = list_diagnostic_inputs(config.input, storage)
    ensure_ray(config.num_cpus)
    if config.model == "tiny":
        resolve_model("tiny")  # build it once here, not in every actor at the same time
    ds = read_trajectories(uris, storage, config.limit)
    ex = RayExecutor()
    pool = ex.pool(config.actors, gpus_per_actor=config.gpus_per_actor, reserve_cpus=1)
    print(f"[raypipe] loss-probe: {len(uris)} input files, {pool.max_size} model actors "
          f"({pool.gpus} GPU, {pool.cpus:g} CPU each) -> {config.output}", flush=True)
    scored = ex.map_dataset(ScoreLoss(config), ds, pool=pool, batch_size=config.batch_size)
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
