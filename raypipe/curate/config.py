"""The curation job's settings: `raypipe curate`'s flags, its --config YAML, and the experiment's curate stage."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from raypipe.core.formats import FORMATS, FieldMapping
from raypipe.core.graders import GRADERS
from raypipe.core.policy import Policy
from raypipe.core.proxies import PROXIES
from raypipe.core.registry import registered
from raypipe.core.rules import RULES
from raypipe.core.scoring import ScoringConfig
from raypipe.core.settings import Settings


class CurateConfig(Settings):
    input: str = Field(description="input file, folder or glob of JSONL (.gz/.zst) or Parquet; local or s3://")
    output: str = Field(description="output folder, local or s3://: curated/ dropped/ rejects/ manifest.json "
                        "report.html")
    format: registered(FORMATS) | None = Field(
        None, description="input format (default: the one each file's fields fit best; an ambiguous file names "
        "the formats that fit)")
    fields: FieldMapping | None = Field(
        None, description="read any other layout: problem=PATH,response=PATH[,thinking=,answer=,id=,source=] with "
        "dotted paths and list indices, e.g. messages[-1].content")
    answer_from: Literal["final", "final-or-thinking"] = Field(
        "final", description="final: grade the final part only; final-or-thinking: a finished reasoning with no "
        "answer after it is graded from its last \\boxed{} (the reason says so)")
    keep_unverified: bool = Field(False, description="keep rows with no reference answer (verdict unverified); "
                                  "they are never ranked")
    drop_top: float = Field(0.10, ge=0.0, le=1.0, description="fraction q of verified-correct rows to drop per "
                            "source (k = floor(q*n + 0.5))")
    rule: registered(RULES) = Field("top", description="which rows to drop: top (highest branch_score), random "
                                    "(seeded), longest (most tokens), keep-all (none)")
    proxy: registered(PROXIES) = Field("keyword-share", description="branch_score: keyword-share (branch_ratio), "
                                       "step-ratio (steps / the reference source's), markers-per-1k")
    lexicon: str = Field("paper", description="branch-marker lexicon: paper, switch, paper-zh, or a YAML file")
    segmenter: str = Field("blank", description="step separator: blank (blank lines), line, or a regex")
    reference_source: str | None = Field(None, description="source whose steps per problem define step_ratio = 1 "
                                         "(needed by --proxy step-ratio)")
    reference_input: str | None = Field(None, description="trajectories (file, folder, glob) scored only to supply "
                                        "--proxy step-ratio's reference steps per problem (its verified-correct "
                                        "rows; of --reference-source only, when given); never written out")
    seed: int = Field(0, description="seed for --rule random and --delete-steps")
    keep_incorrect: bool = Field(False, description="keep rows whose verdict is not 'correct' (else dropped with "
                                 "their verdict as the reason)")
    delete_steps: float = Field(0.0, ge=0.0, lt=1.0, description="ablation: delete this fraction of reasoning steps "
                                "(seeded) from every kept row")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound in seconds on each answer comparison",
                                    validation_alias=AliasChoices("verify_timeout_s", "verify_timeout"))
    grader: registered(GRADERS) = Field("math-verify", description="how final answers are compared with references")
    max_response_chars: int = Field(16 << 20, gt=0, description="longer responses are rejected (a reason each)")
    synthetic: bool = Field(False, description="label the report: the input is a generated sample")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL); credentials and "
                                    "region from the standard AWS settings")
    s3_region: str | None = Field(None, description="S3 region (else AWS_REGION / AWS_DEFAULT_REGION)")
    overwrite: bool = Field(False, description="replace an earlier run in --output made with a different config")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)")
    chunk_mb: int = Field(128, ge=1, description="uncompressed JSONL is split into newline-aligned byte ranges of "
                          "this many MB and Parquet into row groups of about this size, each a unit of work with its "
                          "own completion marker (compressed files stream through one task); part of the config "
                          "hash, as it changes the resume units")
    block_mb: int = Field(32, ge=1, le=1024, description="a scoring actor reads this many MB of a chunk at a time "
                          "(its memory bound)")
    actors: int | None = Field(None, description="a fixed number of scoring actors (default: an autoscaling pool "
                               "from --min-actors to --max-actors)")
    min_actors: int | None = Field(None, ge=1, description="autoscaling pool: at least this many scoring actors "
                                   "(default: what the cluster's CPUs hold now, at most one per chunk)")
    max_actors: int | None = Field(None, ge=1, description="autoscaling pool: at most this many (default: one per "
                                   "chunk; nodes an autoscaler adds are used)")
    batch_rows: int = Field(512, gt=0, description="rows scored together inside an actor")
    verify_workers: int = Field(1, ge=1, description="math-verify worker processes per scoring actor")
    verifier_cpus: float = Field(0.25, ge=0.0, le=1.0, description="CPU reserved for each math-verify worker "
                                 "process of an actor (they run only for answers that are not plain numbers)")

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "plugins", "s3_endpoint", "s3_region", "overwrite", "num_cpus", "actors", "batch_rows", "verify_workers",
        "block_mb", "min_actors", "max_actors", "verifier_cpus")
    HASHED_SINCE_V1: ClassVar[tuple[str, ...]] = (
        "delete_steps", "drop_top", "input", "keep_incorrect", "lexicon", "max_response_chars", "output", "proxy",
        "reference_source", "rule", "seed", "segmenter", "synthetic", "verify_timeout_s")

    @model_validator(mode="after")
    def _check(self) -> "CurateConfig":
        if PROXIES.get(self.proxy).needs_reference and not (self.reference_source or self.reference_input):
            raise ValueError(f"--proxy {self.proxy} needs --reference-source or --reference-input (the trajectories "
                             "whose step counts are 1.0)")
        return self

    def scoring(self) -> ScoringConfig:
        return ScoringConfig(lexicon=self.lexicon, segmenter=self.segmenter, verify_timeout_s=self.verify_timeout_s,
                             verify_workers=self.verify_workers, grader=self.grader, proxy=self.proxy,
                             answer_from=self.answer_from)

    def policy(self) -> Policy:
        return Policy(rule=self.rule, drop_top=self.drop_top, proxy=self.proxy, seed=self.seed,
                      keep_incorrect=self.keep_incorrect, keep_unverified=self.keep_unverified,
                      reference_source=self.reference_source)
