"""raypipe experiment: the paper's arms (A, B, A minus its top 10 % by keyword share or by step ratio against B, A
minus a random 10 % or its longest 10 %, the step-deletion ablation on both, …), on the problems both sources
answered correctly, each through curate -> SFT (matched budgets) -> eval, then one results table. Finished stages
are not run again. `raypipe experiment plan CONFIG` prints every stage's rows, tokens and GPU-hours first."""
from __future__ import annotations

import sys

from raypipe.commands import Command, Refused
from raypipe.experiment.config import ExperimentCommandSettings


def run(args: ExperimentCommandSettings) -> int:
    from pydantic import ValidationError

    from raypipe.core.errors import ConfigMismatch
    from raypipe.core.settings import describe_error
    from raypipe.experiment.config import load_experiment
    from raypipe.experiment.runner import StageFailed, describe, run_experiment, stages

    path = args.config[-1]
    try:
        cfg = load_experiment(path, {"output": args.output, "model": args.model, "arms": args.arms})
    except ValidationError as e:
        raise Refused(f"invalid configuration {path}:\n{describe_error(e)}") from e
    except (OSError, ValueError) as e:
        raise Refused(str(e)) from e
    try:
        if args.config[0] == "plan":
            from raypipe.experiment.plan import estimate, probes, to_text

            print(f"[raypipe] plan: {probes(cfg)}", file=sys.stderr, flush=True)
            print(to_text(estimate(cfg, stages)))
            return 0
        if args.dry_run:
            print(describe(cfg))
            return 0
        run_experiment(cfg)
    except (StageFailed, ConfigMismatch, ValueError) as e:
        print(f"raypipe experiment: {e}", file=sys.stderr)
        return 1
    return 0


COMMAND = Command("experiment", "run the paper's experiment: pairing, arms x (curate, train, eval); `experiment "
                  "plan CONFIG` prices it", ExperimentCommandSettings, run, description=__doc__,
                  example="raypipe experiment plan cluster/experiments/organism-quick.yaml\n"
                          "raypipe experiment cluster/experiments/organism-quick.yaml")
