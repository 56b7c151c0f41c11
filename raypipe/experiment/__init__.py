"""The paper's experiment: arms x (curate -> SFT -> eval), resumable, with one results table."""
from raypipe.experiment.runner import (  # noqa: F401
    ExperimentConfig, Stage, StageFailed, StageMismatch, load_experiment, plan, run_experiment,
)
