"""The step judge's settings: `raypipe judge`'s flags and its --config YAML."""
from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator

from raypipe.core.lexicon import get_lexicon
from raypipe.core.registry import registered
from raypipe.core.settings import Settings
from raypipe.diagnostics import judge_backends, judge_vllm  # noqa: F401  (the backends register themselves)
from raypipe.diagnostics.judge import PROMPT_VERSION
from raypipe.diagnostics.judge_base import JUDGE_BACKENDS, JudgeBackend


class JudgeConfig(Settings):
    input: str = Field(description="trajectories (file, folder, glob; local or s3://) or a curation output folder")
    output: str = Field(description="output folder: trajectories/ (Parquet), summary.json, report.html")
    backend: registered(JUDGE_BACKENDS) = Field("keyword", description="keyword: offline lexicon baseline; openai: "
                                                "any OpenAI-compatible endpoint; vllm: ray.data.llm on GPUs")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="model name at the endpoint (default: the first it lists); for "
                              "vllm a checkpoint path")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    lexicon: str = Field("paper", description="branch-marker lexicon for the keyword judge and branch_ratio")
    segmenter: str = Field("blank", description="step separator: blank, line or a regex")
    steps_per_request: int = Field(30, gt=0, description="steps labelled per LLM request")
    max_step_chars: int = Field(1200, gt=0, description="characters of each step shown to the LLM")
    max_steps: int | None = Field(None, gt=0, description="judge at most the first N steps of a trajectory")
    timeout_s: float = Field(120.0, gt=0, validation_alias=AliasChoices("timeout_s", "timeout"),
                             description="seconds per HTTP request")
    max_retries: int = Field(2, ge=0, description="retries on connection errors, 429 and 5xx (Retry-After honoured)")
    concurrency: int = Field(4, gt=0, description="requests in flight per actor")
    max_tokens: int = Field(2048, gt=0, description="answer token limit")
    temperature: float = Field(0.0, ge=0.0, description="sampling temperature of the judge")
    json_mode: bool = Field(False, description="send response_format json_object")
    limit: int | None = Field(None, gt=0, description="only the first N trajectories")
    batch_size: int = Field(16, gt=0, description="trajectories per actor call (vllm: the engine's batch size)")
    actors: int | None = Field(None, description="labelling actors (default: CPUs - 1); vllm: engine replicas "
                               "(default 1)")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    s3_region: str | None = Field(None, description="S3 region")

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
