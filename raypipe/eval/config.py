"""The evaluation's configuration: flags, a YAML file, or both (flags win)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from raypipe import io as rio
from raypipe.eval import benchmarks, prompting
from raypipe.eval.sampling import Sampling
from raypipe.scoring import ScoringConfig, config_hash
from raypipe.settings import load_settings


class EvalConfig(BaseModel):
    model: str = Field(description="checkpoint folder, 'tiny', a hub id, or an OpenAI-compatible base URL (…/v1)")
    benchmarks: list[str] = Field(default_factory=lambda: list(benchmarks.PAPER_BENCHMARKS))
    output: str
    backend: Literal["hf", "openai", "vllm", "replay"] = "hf"
    n: int = Field(1, ge=1)
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(32768, ge=1)
    seed: int = 0
    prompt_version: str = prompting.DEFAULT
    data_dir: str | None = None
    benchmark_files: dict[str, str] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1, description="first N problems of each benchmark")
    size_check: bool = True
    hub: bool = False
    responses: list[str] | None = None  # replay backend
    lexicon: str = "paper"
    segmenter: str = "blank"
    verify_timeout_s: float = Field(5.0, gt=0)
    # Execution settings: how it runs, not what it measures (not hashed).
    served_model_name: str | None = None
    concurrency: int = Field(8, ge=1)
    retries: int = Field(4, ge=0)
    request_timeout_s: float = Field(600.0, gt=0)
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel: int = Field(1, ge=1)
    replicas: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    dtype: str = "auto"
    max_model_len: int | None = None
    engine_kwargs: dict = Field(default_factory=dict)
    chunk_size: int = Field(64, ge=1, description="samples generated and saved together (the unit of resume)")
    verify_workers: int = Field(1, ge=1)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    overwrite: bool = False
    num_cpus: int | None = None

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "served_model_name", "concurrency", "retries", "request_timeout_s", "api_key_env", "tensor_parallel",
        "replicas", "batch_size", "chunk_size", "verify_workers", "s3_endpoint", "s3_region", "overwrite", "num_cpus",
        "data_dir", "benchmark_files", "hub", "limit")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, v):
        names = benchmarks.parse_names(v) if isinstance(v, str) else benchmarks.parse_names(",".join(v))
        return names

    @field_validator("prompt_version")
    @classmethod
    def _prompt(cls, v):
        prompting.user_message("", v)
        return v

    def sampling(self) -> Sampling:
        return Sampling(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        seed=self.seed)

    def scoring(self) -> ScoringConfig:
        return ScoringConfig(lexicon=self.lexicon, segmenter=self.segmenter, verify_timeout_s=self.verify_timeout_s,
                             verify_workers=self.verify_workers)

    def storage(self) -> rio.Storage:
        return rio.Storage(self.s3_endpoint, self.s3_region)

    def result_fields(self) -> dict:
        """What decides the samples: a resumed run must match these (datasets are checked by their hashes)."""
        return self.model_dump(exclude=set(self.EXECUTION_FIELDS) | {"benchmarks", "output"})

    def hash(self) -> str:
        return config_hash(self.result_fields())


def load_config(path: str | None, overrides: dict) -> EvalConfig:
    return load_settings(EvalConfig, path, overrides)
