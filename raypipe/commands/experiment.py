"""raypipe experiment: the paper's arms (A, B, A minus its top 10 % by branching, A minus a random 10 %, ...),
each through curate -> SFT -> eval, then one results table. Finished stages are not run again."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (see cluster/experiments/)")
    p.add_argument("--output", help="experiment folder, local or s3:// (overrides the config's)")
    p.add_argument("--model", help="base model: path, s3:// copy or 'tiny' (overrides the config's)")
    p.add_argument("--arms", help="comma-separated subset of arms to run")
    p.add_argument("--dry-run", action="store_true", help="print every stage's command and whether it is done")


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run the paper's experiment: arms x (curate, train, eval)",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from raypipe.experiment import StageFailed, StageMismatch, load_experiment, plan, run_experiment
    from raypipe.experiment.runner import stage_done

    overrides = {"output": args.output, "model": args.model,
                 "arms": args.arms.split(",") if args.arms else None}
    try:
        cfg = load_experiment(args.config, overrides)
    except (ValidationError, OSError) as e:
        print(f"raypipe experiment: invalid configuration {args.config}:\n{e}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            storage = cfg.storage()
            for stage in plan(cfg):
                state = "done" if stage_done(stage, storage) else "to run"
                print(f"{stage.arm:15s} {stage.stage:7s} {state:7s} raypipe {' '.join(stage.argv)}")
            return 0
        run_experiment(cfg)
    except (StageFailed, StageMismatch) as e:
        print(f"raypipe experiment: {e}", file=sys.stderr)
        return 1
    return 0


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/experiment.py: its stages join the cluster the job was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/experiment.py", __doc__, add_arguments, run, argv)
