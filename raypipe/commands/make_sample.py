"""raypipe make-sample: write a small synthetic sample (labelled as such) for a demo without real data."""
from __future__ import annotations

from raypipe.commands import Command
from raypipe.curate.config import SampleSettings


def run(settings: SampleSettings) -> int:
    from raypipe.curate.sample import write_sample

    for path in write_sample(settings.output, settings.rows, settings.seed):
        print(path)
    return 0


COMMAND = Command("make-sample", "write a small synthetic sample of trajectories", SampleSettings, run,
                  description=__doc__,
                  example="raypipe make-sample --output out/sample")
