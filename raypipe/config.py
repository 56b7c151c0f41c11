"""The curation job's configuration: flags, a YAML file, or both (flags win)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from raypipe.scoring import ScoringConfig, config_hash
from raypipe.select import Policy
from raypipe.settings import load_settings


class CurateConfig(BaseModel):
    input: str = Field(description="file, folder or glob; local path or s3://")
    output: str = Field(description="output folder; local path or s3://")
    drop_top: float = Field(0.10, ge=0.0, le=1.0, description="fraction of verified-correct rows dropped per source")
    rule: Literal["top", "random", "longest", "keep-all"] = "top"
    proxy: Literal["keyword-share", "step-ratio"] = "keyword-share"
    lexicon: str = "paper"
    segmenter: str = "blank"
    reference_source: str | None = None
    seed: int = 0
    keep_incorrect: bool = False
    delete_steps: float = Field(0.0, ge=0.0, lt=1.0, description="ablation: delete this fraction of steps from kept rows")
    verify_timeout_s: float = Field(5.0, gt=0)
    max_response_chars: int = Field(16 << 20, gt=0)
    synthetic: bool = Field(False, description="label the report: the input is a generated sample")
    # Execution settings: they change how the job runs, not what it writes, so they are not hashed.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    overwrite: bool = False
    num_cpus: int | None = None
    actors: int | None = None
    batch_rows: int = Field(512, gt=0)
    verify_workers: int = Field(1, ge=1, description="math-verify worker processes per scoring actor")

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "s3_endpoint", "s3_region", "overwrite", "num_cpus", "actors", "batch_rows", "verify_workers")

    @model_validator(mode="after")
    def _check(self) -> "CurateConfig":
        if self.proxy == "step-ratio" and not self.reference_source:
            raise ValueError("--proxy step-ratio needs --reference-source (the source whose step counts are 1.0)")
        return self

    def result_fields(self) -> dict:
        return self.model_dump(exclude=set(self.EXECUTION_FIELDS))

    def hash(self) -> str:
        return config_hash(self.result_fields())

    def scoring(self) -> ScoringConfig:
        return ScoringConfig(lexicon=self.lexicon, segmenter=self.segmenter, verify_timeout_s=self.verify_timeout_s,
                             verify_workers=self.verify_workers)

    def policy(self) -> Policy:
        return Policy(rule=self.rule, drop_top=self.drop_top, proxy=self.proxy, seed=self.seed,
                      keep_incorrect=self.keep_incorrect, reference_source=self.reference_source)


def load_config(path: str | None, overrides: dict) -> CurateConfig:
    return load_settings(CurateConfig, path, overrides)
