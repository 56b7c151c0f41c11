"""The step-judge job (on Ray Data, or in this process for a small input): number the steps, label them (the configured backend), aggregate, report."""
from __future__ import annotations

import json
import time

from raypipe.core import io
from raypipe.diagnostics.config import JudgeConfig

__all__ = ["JudgeConfig", "run_judge"]


def run_judge(config: JudgeConfig) -> dict:
    from raypipe.diagnostics.dataset import read_trajectories
    from raypipe.diagnostics.inputs import list_diagnostic_inputs
    from raypipe.diagnostics.judge_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_judge_report

    t0 = time.time()
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    uris = list_diagnostic_inputs(config.input, storage)
    ex = judge_executor(config, io.total_size(uris, storage))
    ds = read_trajectories(uris, storage, config.limit, ex)
    print(f"[raypipe] judge ({config.judge_name()}): {len(uris)} input files -> {config.output}", flush=True)
    labelled = config.backend_class().from_config(config).label(ds, ex)
    traj_uri = io.join(config.output, "trajectories")
    io.remove_tree(traj_uri, storage)
    ex.write_parquet(labelled, traj_uri, storage)
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


def judge_executor(config: JudgeConfig, nbytes: int):
    """In this process for a small input (`nbytes` under --in-process-below-mb) with no cluster to join, when the
    backend can run there; else on Ray."""
    from raypipe.executor import LocalExecutor, executor

    ex = executor(nbytes, config.in_process_below_mb if config.backend_class().in_process else 0, config.num_cpus)
    if isinstance(ex, LocalExecutor):
        print(f"[raypipe] judge: in this process (input under --in-process-below-mb {config.in_process_below_mb:g}; "
              "no Ray started)", flush=True)
    return ex
