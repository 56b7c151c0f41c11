"""The curation job's settings: `raypipe curate`'s flags, its --config YAML, and the experiment's curate stage."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import CliPositionalArg

from raypipe.core.formats import FORMATS, FieldMapping
from raypipe.core.io import StorageSettings
from raypipe.core.policy import PolicySettings
from raypipe.core.proxies import PROXIES
from raypipe.core.registry import registered
from raypipe.core.scoring import ScoringConfig
from raypipe.core.settings import (InputSettings, OutputSettings, OverwriteSettings, SeedSettings, Settings,
                                   SettingsGroup, SourceSettings)
from raypipe.curate.audit import ReferenceAuditSettings
from raypipe.ray_env import ActorPoolSettings, InProcessSettings, LocalRaySettings


class ReadSettings(SettingsGroup):
    """How input rows are read and normalised (curation, and the pairing that scores sources with it)."""

    format: registered(FORMATS) | None = Field(
        None, description="input format (default: the one each file's fields fit best; an ambiguous file names "
        "the formats that fit)")
    fields: FieldMapping | None = Field(
        None, description="read any other layout: problem=PATH,response=PATH[,thinking=,answer=,id=,source=] with "
        "dotted paths and list indices, e.g. messages[-1].content")
    max_response_chars: int = Field(16 << 20, gt=0, description="longer responses are rejected (a reason each)")
    batch_rows: int = Field(512, gt=0, description="rows scored together inside an actor")


class CurateConfig(Settings, InputSettings, OutputSettings, ReadSettings, ScoringConfig, PolicySettings,
                   ReferenceAuditSettings, StorageSettings, LocalRaySettings, InProcessSettings, ActorPoolSettings,
                   OverwriteSettings):
    HELP: ClassVar[dict[str, str]] = {
        "input": "input file, folder or glob of JSONL (.gz/.zst) or Parquet; local or s3://",
        "output": "output folder, local or s3://: curated/ dropped/ rejects/ manifest.json report.html",
        "seed": "seed for --rule random and --delete-steps",
        "actors": "a fixed number of scoring actors (default: an autoscaling pool from --min-actors to --max-actors)",
        "verify_workers": "math-verify worker processes per scoring actor",
        "overwrite": "replace an earlier run in --output made with a different config",
    }

    reference_input: str | None = Field(None, description="trajectories (file, folder, glob) scored only to supply "
                                        "--proxy step-ratio's reference steps per problem (its verified-correct "
                                        "rows; of --reference-source only, when given); never written out")
    policy_from: str | None = Field(None, description="manifest.json of an earlier run (or its output folder; local "
                                    "or s3://) whose policy is applied instead of measuring one: its thresholds, "
                                    "proxy, lexicon, segmenter, grading and audit settings win over the ones given "
                                    "here (the run names any it overrides); duplicates are still found, and the "
                                    "manifest says whether this input's fingerprint is the one the policy was "
                                    "measured on")
    delete_steps: float = Field(0.0, ge=0.0, lt=1.0, description="ablation: delete this fraction of reasoning steps "
                                "(seeded) from every kept row")
    synthetic: bool = Field(False, description="label the report: the input is a generated sample")
    chunk_mb: int = Field(128, ge=1, description="uncompressed JSONL is split into newline-aligned byte ranges of "
                          "this many MB and Parquet into row groups of about this size, each a unit of work with its "
                          "own completion marker (compressed files stream through one task); part of the config "
                          "hash, as it changes the resume units")
    block_mb: int = Field(32, ge=1, le=1024, description="a scoring actor reads this many MB of a chunk at a time "
                          "(its memory bound)")
    min_actors: int | None = Field(None, ge=1, description="autoscaling pool: at least this many scoring actors "
                                   "(default: what the cluster's CPUs hold now, at most one per chunk)")
    max_actors: int | None = Field(None, ge=1, description="autoscaling pool: at most this many (default: one per "
                                   "chunk; nodes an autoscaler adds are used)")
    verifier_cpus: float = Field(0.25, ge=0.0, le=1.0, description="CPU reserved for each math-verify worker "
                                 "process of an actor (they run only for answers that are not plain numbers)")
    select_in_driver_below_rows: int = Field(250_000, ge=0, description="phase 2 (select) runs in the driver "
                                             "process when the input holds fewer records than this: their rank "
                                             "keys fit its memory, and tasks would start cold worker processes for "
                                             "a second's work (0: always as tasks)")
    skip_unreadable: bool = Field(False, description="an input file that cannot be read (a damaged Parquet footer, "
                                  "a compressed file that does not decode) or whose fields fit no format is one "
                                  "reject naming it, and the rest is curated (default: the job stops before any work "
                                  "and names it)")

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "plugins", "s3_endpoint", "s3_region", "overwrite", "num_cpus", "actors", "batch_rows", "verify_workers",
        "block_mb", "min_actors", "max_actors", "verifier_cpus", "in_process_below_mb",
        "select_in_driver_below_rows",
        "skip_unreadable")  # a run it lets finish would have stopped without it: no outputs of its own to tell apart
    HASHED_SINCE_V1: ClassVar[tuple[str, ...]] = (
        "delete_steps", "drop_top", "input", "keep_incorrect", "lexicon", "max_response_chars", "output", "proxy",
        "reference_source", "rule", "seed", "segmenter", "synthetic", "verify_timeout_s")

    @model_validator(mode="after")
    def _check(self) -> "CurateConfig":
        needs = PROXIES.get(self.proxy).needs_reference and not self.policy_from  # else the policy brings its own
        if needs and not (self.reference_source or self.reference_input):
            raise ValueError(f"--proxy {self.proxy} needs --reference-source or --reference-input (the trajectories "
                             "whose step counts are 1.0)")
        return self

    def scoring(self) -> ScoringConfig:
        return ScoringConfig.of(self)


class SampleSettings(Settings, OutputSettings, SeedSettings):
    """`raypipe make-sample`: a small synthetic sample of trajectories, labelled as such."""

    HELP: ClassVar[dict] = {"output": "local folder for the sample: one JSONL file per synthetic source",
                            "seed": "seed of the generated rows"}

    rows: int = Field(200, ge=0, description="rows per source")


class InspectSettings(Settings, SourceSettings, StorageSettings):
    """`raypipe inspect`: records of a curation output, as the report shows them."""

    HELP: ClassVar[dict] = {"source": "only records of this source (--id: of the id's records; --worst: rank this "
                                      "source's dropped records)"}

    folder: CliPositionalArg[str] = Field(description="a curation output folder (local or s3://): its manifest.json, "
                                          "curated/ and dropped/")
    id: str | None = Field(None, description="print the record(s) with this id")
    worst: int | None = Field(None, ge=1, description="print the N dropped records with the highest branch_score")
    step_chars: int = Field(400, ge=0, description="fold a step after this many characters (0: print it whole)")
    color: Literal["auto", "always", "never"] = Field("auto", description="highlight markers with terminal colours "
                                                      "(auto: when printing to a terminal and NO_COLOR is unset; "
                                                      "never: as **marker**)")

    @model_validator(mode="after")
    def _one(self) -> "InspectSettings":
        if (self.id is None) == (self.worst is None):
            raise ValueError("give --id ID or --worst N")
        return self
