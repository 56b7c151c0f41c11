"""The step-judge job on Ray Data: number the steps, label them (the configured backend), aggregate, report."""
from __future__ import annotations

import json
import time

from raypipe.core import io
from raypipe.diagnostics.config import JudgeConfig

__all__ = ["JudgeConfig", "run_judge"]


def run_judge(config: JudgeConfig) -> dict:
    from raypipe.diagnostics.dataset import read_trajectories
    from raypipe.diagnostics.judge_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_judge_report
    from raypipe.ray_env import ensure_ray

    t0 = time.time()
    ensure_ray(config.num_cpus)
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    ds, uris = read_trajectories(config.input, storage, config.limit)
    print(f"[raypipe] judge ({config.judge_name()}): {len(uris)} input files -> {config.output}", flush=True)
    labelled = config.backend_class().from_config(config).label(ds)
    traj_uri = io.join(config.output, "trajectories")
    io.remove_tree(traj_uri, storage)
    fs, path = storage.filesystem(traj_uri)
    labelled.write_parquet(path, filesystem=fs)
    table = io.read_parquet_dir(traj_uri, storage, columns=SUMMARY_COLUMNS)
    summary = {
        "judge": config.judge_name(),
        "prompt_version": config.prompt_version(),
        "config": config.model_dump(),
        "inputs": uris,
        "rows": table.num_rows if table is not None else 0,
        "sources": source_summary(table) if table is not None else {},
        "seconds": round(time.time() - t0, 2),
    }
    io.write_text(json.dumps(summary, indent=1), io.join(config.output, "summary.json"), storage)
    write_judge_report(summary, io.join(config.output, "report.html"), storage)
    print(f"[raypipe] judge done in {summary['seconds']}s: {summary['rows']} trajectories; "
          f"report {io.join(config.output, 'report.html')}", flush=True)
    return summary
