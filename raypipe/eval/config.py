"""The evaluation's settings: `raypipe eval`'s flags, its --config YAML, and the experiment's eval stage."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator

from raypipe.core import io as rio
from raypipe.core.graders import GRADERS
from raypipe.core.registry import registered
from raypipe.core.scoring import ScoringConfig
from raypipe.core.prompts import PromptSettings
from raypipe.eval import benchmarks
from raypipe.eval.backends import BACKENDS
from raypipe.eval.sampling import Sampling

BENCHMARK_NAMES = ", ".join(benchmarks.REGISTRY)


class EvalConfig(PromptSettings):
    model: str = Field(description="checkpoint folder, 'tiny', a hub id, or an OpenAI-compatible base URL such as "
                       "http://127.0.0.1:8000/v1")
    benchmarks: list[str] = Field(list(benchmarks.PAPER_BENCHMARKS), description=f"comma-separated: "
                                  f"{BENCHMARK_NAMES} (default: the paper's five)")
    output: str = Field(description="output folder, local or s3://: results.json, report.html, samples/ (resume "
                        "state)")
    backend: registered(BACKENDS) = Field("hf", description="hf: transformers here; openai: an OpenAI-compatible "
                                          "server at --model; vllm: Ray Data LLM with vLLM; replay: grade stored "
                                          "--responses")
    n: int = Field(1, ge=1, description="samples per problem (avg@n, pass@k for k = 1, 2, 4, … n, maj@n)")
    temperature: float = Field(0.6, ge=0.0, description="sampling temperature (0: greedy)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling")
    max_tokens: int = Field(32768, ge=1, description="most new tokens per sample")
    seed: int = Field(0, description="run seed; each sample's seed derives from it and the sample's key")
    data_dir: str | None = Field(None, description="folder of benchmark files (else $RAYPIPE_DATA_DIR)")
    benchmark_files: dict[str, str] = Field(
        {}, validation_alias=AliasChoices("benchmark_files", "benchmark_file"),
        description="NAME=PATH: read this benchmark from a local or s3:// file (repeatable)")
    limit: int | None = Field(None, ge=1, description="evaluate the first N problems of each benchmark")
    size_check: bool = Field(True, description="refuse a benchmark file whose problem count differs from the "
                             "registry's (--no-size-check accepts it)")
    hub: bool = Field(False, description="load benchmarks without a local file from their Hugging Face dataset id "
                      "(needs `datasets` and network)")
    responses: list[str] | None = Field(None, description="replay backend: JSONL/Parquet file or folder with problem "
                                        "+ response fields (repeatable)")
    lexicon: str = Field("paper", description="branch-marker lexicon for the outputs' statistics (paper, switch, "
                         "FILE.yaml)")
    segmenter: str = Field("blank", description="step separator for the outputs' statistics: blank (blank lines), "
                           "line, or a regex")
    verify_timeout_s: float = Field(5.0, gt=0, validation_alias=AliasChoices("verify_timeout_s", "verify_timeout"),
                                    description="bound in seconds per answer comparison")
    answer_from: Literal["final", "final-or-thinking"] = Field(
        "final", description="as in curation: final grades the final part only; final-or-thinking also a finished "
        "reasoning's last \\boxed{} when no answer follows it")
    grader: registered(GRADERS) = Field("math-verify", description="how answers are compared with references (as "
                                        "in curation)")
    # Execution settings: how it runs, not what it measures (not hashed).
    served_model_name: str | None = Field(None, description="openai: the model name to request (default: the first "
                                          "listed)")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    retries: int = Field(4, ge=0, description="openai: retries per request on errors and 429/5xx (Retry-After "
                         "honoured)")
    request_timeout_s: float = Field(600.0, gt=0, description="openai: seconds per request",
                                     validation_alias=AliasChoices("request_timeout_s", "request_timeout"))
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key")
    tensor_parallel: int = Field(1, ge=1, description="vllm: GPUs per engine replica")
    replicas: int = Field(1, ge=1, description="vllm: engine replicas (data parallel)")
    batch_size: int = Field(8, ge=1, description="hf/vllm: prompts per engine batch")
    dtype: str = Field("auto", description="model dtype (auto, float32, bfloat16, …)")
    max_model_len: int | None = Field(None, description="vllm: context length of the engine")
    engine_kwargs: dict[str, Any] = Field({}, description="vllm: extra vLLM engine arguments, as "
                                           "JSON ('{\"enforce_eager\": true}'; KEY=VALUE gives strings)")
    chunk_size: int = Field(64, ge=1, description="samples generated and saved together (the unit of resume)")
    verify_workers: int = Field(1, ge=1, description="math-verify worker processes grading the outputs")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    s3_region: str | None = Field(None, description="S3 region")
    overwrite: bool = Field(False, description="replace an evaluation in --output made with other settings")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (vllm backend)")

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

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, v):
        return benchmarks.parse_names(v if isinstance(v, str) else ",".join(v))

    def sampling(self) -> Sampling:
        return Sampling(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        seed=self.seed)

    def scoring(self) -> ScoringConfig:
        return ScoringConfig(lexicon=self.lexicon, segmenter=self.segmenter, verify_timeout_s=self.verify_timeout_s,
                             verify_workers=self.verify_workers, answer_from=self.answer_from, grader=self.grader)

    def storage(self) -> rio.Storage:
        return rio.Storage(self.s3_endpoint, self.s3_region)

    def result_fields(self) -> dict:
        """What decides the samples: a resumed run must match these (datasets are checked by their hashes)."""
        return {k: v for k, v in super().result_fields().items() if k not in self.NOT_HASHED}
