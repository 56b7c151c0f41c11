"""The diagnostics' settings: `raypipe judge`, `raypipe loss-probe` and `raypipe diagnose` (flags and --config
YAML), and the experiment's judge stage."""
from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, field_validator, model_validator

from raypipe.core.io import StorageSettings
from raypipe.core.lexicon import LexiconSettings, get_lexicon
from raypipe.core.settings import (BackendSettings, BatchSettings, InputSettings, LimitSettings, ModelSettings,
                                   OutputSettings, Settings)
from raypipe.core.structure import StructureSettings
from raypipe.diagnostics import judge_backends, judge_vllm  # noqa: F401  (the backends register themselves)
from raypipe.diagnostics.judge import PROMPT_VERSION
from raypipe.diagnostics.judge_base import JUDGE_BACKENDS, JudgeBackend
from raypipe.eval.config import DtypeSettings
from raypipe.eval.openai_client import ClientSettings
from raypipe.eval.sampling import GenerationSettings
from raypipe.ray_env import ActorPoolSettings, InProcessSettings, LocalRaySettings
from raypipe.train.config import RenderSettings


# What both trajectory diagnostics (the judge and the loss probe) read and write.
TRAJECTORY_HELP = {
    "input": "trajectories (file, folder, glob; local or s3://) or a curation output folder",
    "output": "output folder: trajectories/ (Parquet), summary.json, report.html",
    "limit": "only the first N trajectories",
}


class JudgeConfig(Settings, InputSettings, OutputSettings, BackendSettings, ModelSettings, ClientSettings,
                  StructureSettings, GenerationSettings, LimitSettings, BatchSettings, ActorPoolSettings,
                  LocalRaySettings, InProcessSettings, StorageSettings):
    REGISTRIES: ClassVar[dict] = {"backend": JUDGE_BACKENDS}
    DEFAULTS: ClassVar[dict] = {"backend": "keyword", "model": None, "concurrency": 4, "retries": 2,
                                "request_timeout_s": 120.0, "max_tokens": 2048, "temperature": 0.0, "batch_size": 16}
    HELP: ClassVar[dict] = {
        **TRAJECTORY_HELP,
        "backend": "keyword: offline lexicon baseline; openai: any OpenAI-compatible endpoint; vllm: ray.data.llm on "
                   "GPUs",
        "model": "model name at the endpoint (default: the first it lists); for vllm a checkpoint path",
        "lexicon": "branch-marker lexicon for the keyword judge and branch_ratio",
        "concurrency": "requests in flight per actor",
        "max_tokens": "answer token limit",
        "temperature": "sampling temperature of the judge",
        "batch_size": "trajectories per actor call (vllm: the engine's batch size)",
        "actors": "labelling actors (default: CPUs - 1); vllm: engine replicas (default 1)",
    }

    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    steps_per_request: int = Field(30, gt=0, description="steps labelled per LLM request")
    max_step_chars: int = Field(1200, gt=0, description="characters of each step shown to the LLM")
    max_judged_steps: int | None = Field(None, gt=0, description="judge at most the first N steps of a trajectory",
                                         validation_alias=AliasChoices("max_judged_steps", "max_steps"))
    json_mode: bool = Field(False, description="send response_format json_object")

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        self.backend_class().check(self)
        get_lexicon(self.lexicon)
        return self

    def backend_class(self) -> type[JudgeBackend]:
        return JUDGE_BACKENDS.get(self.backend)

    def judge_name(self) -> str:
        return self.backend_class().judge_name(self)

    def prompt_version(self) -> str | None:
        return PROMPT_VERSION if self.backend_class().prompted else None


class LossConfig(RenderSettings, InputSettings, OutputSettings, ModelSettings, LexiconSettings, DtypeSettings,
                 LimitSettings, BatchSettings, ActorPoolSettings, LocalRaySettings, StorageSettings):
    """The loss probe's settings; template, think_open and think_close render the trajectories as SFT does."""

    DEFAULTS: ClassVar[dict] = {"model": "tiny"}
    HELP: ClassVar[dict] = {
        **TRAJECTORY_HELP,
        "model": "causal LM checkpoint folder (e.g. an SFT job's <output>/model) or 'tiny'",
        "batch_size": "trajectories per actor call (results do not depend on it)",
        "actors": "model actors (default: one per GPU, else CPUs - 1)",
    }

    window: int = Field(1024, gt=1, description="tokens per forward pass; the KV cache carries the prefix")
    max_scored_tokens: int | None = Field(None, gt=1, description="score at most this many tokens of prompt + "
                                          "response (default: the model's context)",
                                          validation_alias=AliasChoices("max_scored_tokens", "max_tokens"))
    routine_threshold: float = Field(0.05, gt=0, description="loss (nats) below which a token counts as routine")
    keep_token_losses: bool = Field(False, description="also store every token's loss")
    gpus_per_actor: float | None = Field(None, ge=0, description="GPUs per actor (default 1 when the cluster has "
                                         "GPUs)")

    def probe(self):
        from raypipe.diagnostics.loss import LossProbe

        return LossProbe(self.model, self.window, self.max_scored_tokens, self.routine_threshold, self.lexicon,
                         dtype=self.dtype, keep_token_losses=self.keep_token_losses, template=self.template,
                         think_open=self.think_open, think_close=self.think_close,
                         prompt_version=self.prompt_version)


class DiagnoseSettings(Settings, OutputSettings, StorageSettings):
    HELP: ClassVar[dict] = {"output": "HTML file to write (local or s3://)"}

    sources: list[str] = Field(description="A,B: A plays the paper's DeepSeek-R1, B its gpt-oss-120b")
    loss_outputs: list[str] = Field([], description="loss-probe output folder(s), comma-separated",
                                    validation_alias=AliasChoices("loss_outputs", "loss"))
    judge_outputs: list[str] = Field([], description="judge output folder(s), comma-separated",
                                     validation_alias=AliasChoices("judge_outputs", "judge"))

    @field_validator("sources", "loss_outputs", "judge_outputs", mode="before")
    @classmethod
    def _split(cls, v):
        """'A,B' or [A, B]; blank entries dropped."""
        if isinstance(v, str):
            v = v.split(",")
        return [x.strip() for x in v if x.strip()] if isinstance(v, list) and all(isinstance(x, str) for x in v) else v

    @model_validator(mode="after")
    def _check(self) -> "DiagnoseSettings":
        if len(self.sources) != 2:
            raise ValueError("--sources takes exactly two names, A,B")
        if not self.loss_outputs and not self.judge_outputs:
            raise ValueError("give --loss and/or --judge output folders")
        return self
