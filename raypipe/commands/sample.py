"""raypipe make-sample: write a small synthetic sample (labelled as such) for a demo without real data."""
from __future__ import annotations

from pydantic import Field

from raypipe.commands import Command
from raypipe.core.settings import Settings


class SampleSettings(Settings):
    output: str = Field(description="local folder for the sample: one JSONL file per synthetic source")
    rows: int = Field(200, ge=0, description="rows per source")
    seed: int = Field(0, description="seed of the generated rows")


def run(settings: SampleSettings) -> int:
    from raypipe.curate.sample import write_sample

    for path in write_sample(settings.output, settings.rows, settings.seed):
        print(path)
    return 0


COMMAND = Command("make-sample", "write a small synthetic sample of trajectories", SampleSettings, run,
                  description=__doc__)
