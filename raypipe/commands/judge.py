"""raypipe judge: label every reasoning step propose | deduce | verify | other, per source (Ray Data)."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.diagnostics.config import JudgeConfig


def run(config: JudgeConfig) -> int:
    from raypipe.diagnostics.judge_job import run_judge

    with refusing(FileNotFoundError, ValueError, OSError, RuntimeError):
        run_judge(config)
    return 0


COMMAND = Command("judge", "label reasoning steps (keyword baseline or an LLM judge)", JudgeConfig, run,
                  description=__doc__,
                  example="raypipe judge --input ../shared/data/trajectories --output out/judge --backend keyword")
