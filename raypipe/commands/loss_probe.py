"""raypipe loss-probe: token-level SFT loss of a causal LM on trajectories, per source (Ray Data model actors)."""
from __future__ import annotations

import sys

from raypipe.commands import Command
from raypipe.diagnostics.config import LossConfig


def run(config: LossConfig) -> int:
    from raypipe.diagnostics.loss_job import run_loss_probe

    try:
        run_loss_probe(config)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"raypipe loss-probe: {e}", file=sys.stderr)
        return 2
    return 0


COMMAND = Command("loss-probe", "token-level loss probe (the paper's routine vs key tokens)", LossConfig, run,
                  description=__doc__,
                  example="raypipe loss-probe --input ../shared/data/r1 --output out/loss-r1 --model tiny")
