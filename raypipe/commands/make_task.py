"""raypipe make-task: the model organism, a task a student learns from scratch on a laptop, with a convergent and a
divergent teacher (paired by problem id), an in-distribution test split and a harder split (registered benchmarks
`organism` and `organism_hard`), and the student itself; the same seed writes the same files."""
from __future__ import annotations

import json

from raypipe.commands import Command
from raypipe.organism.config import MakeTaskConfig


def run(config: MakeTaskConfig) -> int:
    from raypipe.organism.make import make_task

    summary = make_task(config)
    print(json.dumps({"output": config.output, "problems": summary["problems"],
                      "teachers": {t: {k: v[k] for k in ("correct_rate", "mean_branches", "cut_off", "wrong")}
                                   for t, v in summary["teachers"].items()},
                      "student_parameters": summary["student"]["parameters"]}))
    return 0


COMMAND = Command("make-task", "write the model organism: two teachers' traces, test splits and a student",
                  MakeTaskConfig, run, description=__doc__,
                  example="raypipe make-task --output out/task --seed 0")
