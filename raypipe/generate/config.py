"""`raypipe generate`'s settings: the problems, the teacher (the same backend and sampling settings as `raypipe
eval`), quotas, the branch budget that stops a trace while it streams, and the curation of what comes out."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from raypipe.core.io import StorageSettings
from raypipe.core.policy import PolicySettings
from raypipe.core.prompts import PromptSettings
from raypipe.core.scoring import ScoringConfig
from raypipe.core.settings import InputSettings, LimitSettings, OutputSettings, OverwriteSettings, SourceSettings
from raypipe.curate.config import CurateConfig
from raypipe.eval.benchmarks import BenchmarkDirSettings
from raypipe.eval.config import TeacherSettings
from raypipe.generate.abort import DEFAULT_ABORT, AbortRule
from raypipe.ray_env import LocalRaySettings


class GenerateConfig(InputSettings, BenchmarkDirSettings, PromptSettings, TeacherSettings, ScoringConfig,
                     PolicySettings, OutputSettings, LimitSettings, SourceSettings, StorageSettings, LocalRaySettings,
                     OverwriteSettings):
    HELP: ClassVar[dict] = {
        "output": "output folder, local or s3://: the curated output (curated/ dropped/ rejects/ manifest.json "
                  "report.html, as raypipe curate writes them) and generation/: traces/ (the teacher's own markup), "
                  "aborted/, units/ (one marker per problem and sample)",
        "seed": "run seed; each (problem, sample)'s seed derives from it, so a rerun samples again the same way",
        "limit": "only the first N problems",
        "overwrite": "replace an earlier run in --output made with other settings",
        "batch_size": "units a worker takes at a time (hf/vllm: prompts per engine batch)",
        "input": "problems: a registered benchmark name (math500, aime24, organism, …) or a JSONL / Parquet file, "
                 "folder or glob with problem and answer fields; local or s3://",
        "data_dir": "folder of benchmark files, for a benchmark --input (else $RAYPIPE_DATA_DIR)",
        "n": "samples per problem (the first round, with --keep-per-problem)",
        "source": "the traces' source name (default: the teacher's model name)",
    }

    keep_per_problem: int | None = Field(None, ge=1, description="quota: keep sampling a problem (up to "
                                         "--max-samples) until this many verified-correct traces pass the filter")
    max_samples: int = Field(8, ge=1, description="quota: most samples of one problem")
    abort_when: str = Field(DEFAULT_ABORT, description="stop a streaming trace once it will be dropped: "
                            "'branch_steps>=25' (measured on real traces: benchmarks/generate_budget.py), "
                            "'markers>=30', 'branch_ratio>=threshold after 30 steps', … (raypipe.generate.abort); "
                            "'none': every trace runs to its end")
    reference_manifest: str | None = Field(None, description="an earlier curation's manifest.json (or its output "
                                           "folder): each source's threshold for `branch_ratio>=threshold` and the "
                                           "quota's filter; unset: the running quantile of this run's traces")
    scorer: str | None = Field(None, description="a running `raypipe serve` base URL: finished traces are scored "
                               "there (with its manifest's thresholds) instead of in each worker")
    scorer_token_env: str = Field("RAYPIPE_SCORER_TOKEN", description="environment variable holding the scorer's "
                                  "bearer token")
    workers: int | None = Field(None, ge=1, description="generation workers (default: the cluster's CPUs for a "
                                "streaming teacher, one otherwise)")

    @model_validator(mode="after")
    def _check(self) -> "GenerateConfig":
        self.abort_rule()
        if self.keep_per_problem and self.keep_per_problem > self.max_samples:
            raise ValueError("--keep-per-problem exceeds --max-samples")
        return self

    def abort_rule(self) -> AbortRule | None:
        return None if self.abort_when.strip() == "none" else AbortRule.parse(self.abort_when)

    def curation(self) -> CurateConfig:
        """The curation of the finished traces: the same policy and scoring settings, on traces/."""
        shared = {k: getattr(self, k) for k in CurateConfig.model_fields if k in type(self).model_fields
                  and k not in ("input", "output", "limit", "batch_size")}
        return CurateConfig.model_validate({**shared, "input": self.traces_uri(), "output": self.output})

    def generation_uri(self, *parts: str) -> str:
        from raypipe.core import io

        return io.join(self.output, "generation", *parts)

    def traces_uri(self) -> str:
        return self.generation_uri("traces")
