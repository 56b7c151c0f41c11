"""`raypipe make-task`'s settings: the splits, the two teachers and the student."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from raypipe.core.settings import OutputSettings, SeedSettings, Settings
from raypipe.organism.student import StudentSettings
from raypipe.organism.task import Difficulty, TeacherStyle


class MakeTaskConfig(Settings, OutputSettings, SeedSettings):
    HELP: ClassVar[dict] = {"output": "local folder: teachers/, benchmarks/, student/, task.json",
                            "seed": "seed of the problems, the teachers' traces and the student's weights"}

    train_problems: int = Field(20000, ge=10, description="problems both teachers solve (the training sources)")
    test_problems: int = Field(200, ge=1, description="problems of the in-distribution test split (organism)")
    hard_problems: int = Field(200, ge=1, description="problems of the harder split (organism_hard)")
    difficulty: Difficulty = Field(default_factory=Difficulty, description="training and in-distribution problems")
    hard: Difficulty = Field(default_factory=lambda: Difficulty(min_ops=5, max_ops=5, min_start=11, max_start=30),
                             description="the harder split's problems: the longest chains, half of them from start "
                             "values beyond any training problem's")
    convergent: TeacherStyle = Field(default_factory=TeacherStyle, description="the convergent teacher (source B): "
                                     "straight to the answer")
    divergent: TeacherStyle = Field(default_factory=lambda: TeacherStyle(branch_alpha=1.0, branch_beta=2.0),
                                    description="the divergent teacher (source A): opens and abandons alternatives")
    student: StudentSettings = Field(default_factory=StudentSettings, description="the student's architecture")

    def max_number(self) -> int:
        """The largest number the task writes (every number up to it is one token of the student's vocabulary)."""
        return max(self.difficulty.max_value, self.hard.max_value)
