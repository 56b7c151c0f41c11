"""raypipe experiment: the paper's arms (A, B, A minus its top 10 % by branching, A minus a random 10 %, ...),
each through curate -> SFT -> eval, then one results table. Finished stages are not run again."""
from __future__ import annotations

import sys

from pydantic import Field
from pydantic_settings import CliPositionalArg

from raypipe.commands import Command
from raypipe.core.settings import Settings


class ExperimentCommandSettings(Settings):
    config: CliPositionalArg[str] = Field(description="experiment YAML (see cluster/experiments/)")
    output: str | None = Field(None, description="experiment folder, local or s3:// (overrides the config's)")
    model: str | None = Field(None, description="base model: path, s3:// copy or 'tiny' (overrides the config's)")
    arms: list[str] | None = Field(None, description="comma-separated subset of arms to run")
    dry_run: bool = Field(False, description="print every stage, whether it is done, and its effective settings")


def run(args: ExperimentCommandSettings) -> int:
    from pydantic import ValidationError

    from raypipe.core.settings import describe_error
    from raypipe.experiment.config import load_experiment
    from raypipe.core.errors import ConfigMismatch
    from raypipe.experiment.runner import StageFailed, describe, run_experiment

    try:
        cfg = load_experiment(args.config, {"output": args.output, "model": args.model, "arms": args.arms})
    except ValidationError as e:
        print(f"raypipe experiment: invalid configuration {args.config}:\n{describe_error(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"raypipe experiment: {e}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            print(describe(cfg))
            return 0
        run_experiment(cfg)
    except (StageFailed, ConfigMismatch) as e:
        print(f"raypipe experiment: {e}", file=sys.stderr)
        return 1
    return 0


COMMAND = Command("experiment", "run the paper's experiment: arms x (curate, train, eval)",
                  ExperimentCommandSettings, run, description=__doc__)
