"""raypipe eval: evaluate a checkpoint or an OpenAI-compatible server on math benchmarks (avg@n, pass@k, maj@n,
branch statistics of the outputs). `raypipe eval compare RUN_A RUN_B …` prints the side-by-side table."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.eval.config import CompareSettings, EvalConfig


def run_compare(settings: CompareSettings) -> int:
    from raypipe.core import io as rio
    from raypipe.eval.results import compare_table, load_results

    storage = settings.storage()
    with refusing(FileNotFoundError, ValueError):
        runs = [(r.rstrip("/").rsplit("/", 1)[-1], load_results(r, storage)) for r in settings.runs]
    print(compare_table(runs, settings.metric))
    return 0


def run(config: EvalConfig) -> int:
    from raypipe.core.errors import ConfigMismatch
    from raypipe.eval.benchmarks import BenchmarkError
    from raypipe.eval.runner import run_eval

    with refusing(BenchmarkError, ConfigMismatch, FileNotFoundError, ConnectionError, ImportError):
        run_eval(config)
    return 0


COMPARE = Command("compare", "print the side-by-side table of evaluation runs", CompareSettings, run_compare,
                  description="raypipe eval compare RUN_A RUN_B …: one row per run, one column per benchmark, then "
                  "the average, and each run's difference from the first.",
                  example="raypipe eval compare eval-out/tiny eval-out/served --metric pass@1")
COMMAND = Command("eval", "evaluate a model on math benchmarks; `eval compare A B` compares runs", EvalConfig, run,
                  description=__doc__, subcommands=(COMPARE,),
                  example="raypipe eval --model tiny --backend hf --benchmarks math500 --limit 5 --n 2 --max-tokens 64 "
                          "--data-dir ../shared/data/benchmarks --output eval-out/tiny")
