"""The experiment's settings: its arms, sources and benchmarks, and the typed settings of each stage.

A stage section (`curate:`, `train:`, `eval:`) takes any setting of that command but the ones the runner sets per
arm (inputs, outputs, the model, the arm's rule); a misspelled or unknown key is an error that names it, and every
value reaches the stage as it is written, false ones included.
"""
from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from raypipe.core import io
from raypipe.core.settings import Settings
from raypipe.curate.config import CurateConfig
from raypipe.eval.config import EvalConfig
from raypipe.train.config import TrainConfig

STANDARD_ARMS = ("A-all", "B-all", "A-drop-top", "A-drop-random")
OPTIONAL_ARMS = ("A-delete-steps", "base")
STAGE_MODELS: dict[str, type[Settings]] = {"curate": CurateConfig, "train": TrainConfig, "eval": EvalConfig}
# What the runner sets itself for each stage of each arm.
RUNNER_SETS = {"curate": {"input", "output", "s3_endpoint", "s3_region"},
               "train": {"data", "model", "output", "s3_endpoint", "s3_region"},
               "eval": {"model", "benchmarks", "output", "s3_endpoint", "s3_region"}}


class StageSection(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def section_model(stage: str) -> type[StageSection]:
    """The stage's settings with every field optional (unset: the command's default) and the runner's left out."""
    model = STAGE_MODELS[stage]
    fields: dict[str, Any] = {
        name: (f.annotation | None, Field(None, description=f.description, validation_alias=f.validation_alias))
        for name, f in model.model_fields.items() if name not in RUNNER_SETS[stage]}
    return create_model(f"{model.__name__}Section", __base__=StageSection,
                        __doc__=f"`raypipe {stage}` settings for every arm", **fields)


CurateSection, TrainSection, EvalSection = (section_model(s) for s in ("curate", "train", "eval"))


class ExperimentConfig(Settings):
    name: str = Field("branching-study", description="the study's name, on the results page")
    output: str = Field(description="experiment folder, local or s3://: arms/<arm>/{curate,sft,eval}/ and results.*")
    model: str = Field("tiny", description="base model: Hugging Face path, s3:// copy, or 'tiny'")
    benchmarks: list[str] = Field(["math500", "aime24", "aime25", "beyond_aime", "hmmt25"],
                                  description="benchmarks every arm is evaluated on")
    source_a: str = Field(description="input of source A (file, folder, glob; local or s3://)")
    source_b: str = Field(description="input of source B, on the same problems")
    drop: float = Field(0.10, gt=0, lt=1, description="fraction dropped in the drop arms / steps deleted")
    seed: int = Field(0, description="seed of every stage (a stage section may set its own)")
    arms: list[str] = Field(list(STANDARD_ARMS), description="arms to run: "
                            f"{', '.join(STANDARD_ARMS + OPTIONAL_ARMS)}")
    curate: CurateSection = Field(default_factory=CurateSection, description="curation settings of every arm")
    train: TrainSection = Field(default_factory=TrainSection, description="SFT settings of every arm")
    eval: EvalSection = Field(default_factory=EvalSection, description="evaluation settings of every arm")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL, passed to every stage")
    s3_region: str | None = Field(None, description="S3 region, passed to every stage")

    @field_validator("arms")
    @classmethod
    def _known(cls, arms: list[str]) -> list[str]:
        unknown = [a for a in arms if a not in STANDARD_ARMS + OPTIONAL_ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {', '.join(STANDARD_ARMS + OPTIONAL_ARMS)}")
        if len(set(arms)) != len(arms):
            raise ValueError("an arm is listed twice")
        return arms

    def storage(self) -> io.Storage:
        return io.Storage(self.s3_endpoint, self.s3_region)


def load_experiment(path: str, overrides: dict | None = None) -> ExperimentConfig:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ExperimentConfig.model_validate(data)
