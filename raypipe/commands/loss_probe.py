"""raypipe loss-probe: token-level SFT loss of a causal LM on trajectories, per source (Ray Data model actors)."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.diagnostics.config import LossConfig


def run(config: LossConfig) -> int:
    from raypipe.diagnostics.loss_job import run_loss_probe

    with refusing(FileNotFoundError, ValueError, OSError):
        run_loss_probe(config)
    return 0


COMMAND = Command("loss-probe", "token-level loss probe (the paper's routine vs key tokens)", LossConfig, run,
                  description=__doc__,
                  example="raypipe loss-probe --input ../shared/data/r1 --output out/loss-r1 --model tiny")
