"""raypipe generate: problems in (a benchmark, or a file of problems), a teacher's traces out in its own markup
(generation/traces/), each streamed trace scored as it arrives and stopped once a branch budget says it will be
dropped (--abort-when), quotas of kept traces per problem, and a curated output like `raypipe curate`'s with the
generation's accounting in its manifest."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.generate.config import GenerateConfig


def run(config: GenerateConfig) -> int:
    from raypipe.core.errors import ConfigMismatch
    from raypipe.eval.benchmarks import BenchmarkError
    from raypipe.generate.job import run_generate

    with refusing(ConfigMismatch, BenchmarkError, ValueError, FileNotFoundError):
        run_generate(config)
    return 0


COMMAND = Command("generate", "sample a teacher on problems, stop branch-heavy traces early, curate what comes out",
                  GenerateConfig, run, description=__doc__,
                  example="raypipe generate --backend openai --model http://127.0.0.1:8000/v1 --input aime24 "
                          "--data-dir ../shared/data/benchmarks --n 4 --output out/generate")
