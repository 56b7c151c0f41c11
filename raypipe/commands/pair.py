"""raypipe pair: the paired problems of two or more sources. Each source is scored by the curation job (its
verifier, `--answer-from`, formats), the sources are joined on the problem key, and only the problems where every
source has a verified-correct trajectory are kept: inputs/<name>/ (the original rows of those problems, what each
arm's curation reads) and pairing.json (problems per source, overlap, every exclusion and its reason)."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.experiment.config import PairConfig


def run(config) -> int:
    from raypipe.core.errors import ConfigMismatch, LayoutError
    from raypipe.experiment.pairing import run_pairing

    with refusing(ConfigMismatch, LayoutError, FileNotFoundError, ValueError):
        report = run_pairing(config)
    return 0 if report["paired"] else 1


COMMAND = Command("pair", "pair sources on their problems: keep those every source answered correctly", PairConfig,
                  run, description=__doc__,
                  example="raypipe pair a.jsonl b.jsonl --names A,B --output out/paired")
