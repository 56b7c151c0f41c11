"""The experiment's settings: its arms, sources and benchmarks, and the typed settings of each stage.

A stage section (`curate:`, `train:`, `eval:`) takes any setting of that command but the ones the runner sets per
arm (inputs, outputs, the model, the arm's rule); a misspelled or unknown key is an error that names it, and every
value reaches the stage as it is written, false ones included.
"""
from __future__ import annotations

import string
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_settings import CliPositionalArg

from raypipe.core import io
from raypipe.core.io import StorageSettings
from raypipe.core.scoring import GradingSettings, VerifierSettings
from raypipe.core.settings import OutputSettings, ModelSettings, SeedSettings, Settings, SettingsGroup, yaml_file
from raypipe.core.structure import StructureSettings
from raypipe.curate.config import CurateConfig, ReadSettings
from raypipe.eval.benchmarks import BenchmarksSettings
from raypipe.ray_env import ActorPoolSettings, LocalRaySettings
from raypipe.diagnostics.config import JudgeConfig
from raypipe.eval.config import EvalConfig
from raypipe.organism.config import MakeTaskConfig
from raypipe.train.config import TrainConfig

# The paper's arms (A plays DeepSeek-R1-0528, B gpt-oss-120b); `base` is the student without SFT. `A-drop-top` is the
# earlier name of A-drop-top-keyword, still accepted so that earlier experiment folders resume.
STANDARD_ARMS = ("A-all", "A-drop-top-keyword", "A-drop-top-step-ratio", "A-drop-random", "A-drop-longest", "B-all",
                 "A-delete-steps", "B-delete-steps")
OPTIONAL_ARMS = ("base", "A-drop-top")
DROP_ARMS = ("A-drop-top-keyword", "A-drop-top-step-ratio", "A-drop-random", "A-drop-longest", "A-drop-top")
STAGE_MODELS: dict[str, type[Settings]] = {"curate": CurateConfig, "train": TrainConfig, "eval": EvalConfig,
                                           "judge": JudgeConfig}
STAGE_DIRS = {"curate": "curate", "train": "sft", "eval": "eval"}
GRADING = ("answer_from", "grader")  # curation's grading settings that evaluation takes over
# What the runner sets itself for each stage of each arm.
RUNNER_SETS = {"curate": {"input", "output", "s3_endpoint", "s3_region", "reference_input"},
               "train": {"data", "model", "output", "s3_endpoint", "s3_region"},
               "eval": {"model", "benchmarks", "output", "s3_endpoint", "s3_region"},
               "judge": {"input", "output", "s3_endpoint", "s3_region"}}


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


CurateSection, TrainSection, EvalSection, JudgeSection = (section_model(s) for s in ("curate", "train", "eval",
                                                                                       "judge"))


class PairConfig(Settings, OutputSettings, ReadSettings, StructureSettings, GradingSettings, VerifierSettings,
                 StorageSettings, LocalRaySettings, ActorPoolSettings):
    """`raypipe pair` settings: the sources, the key, and how to read them (the curation settings that decide how a
    source is read and graded: the pairing scores with exactly these)."""

    HELP: ClassVar[dict] = {"output": "output folder, local or s3://: inputs/<name>/, scored/<name>/, pairing.json",
                            "actors": "a fixed number of scoring actors for each source (default: as many as the "
                                      "cluster's CPUs hold, at most one per chunk)"}

    inputs: CliPositionalArg[list[str]] = Field(description="two or more sources (file, folder or glob; local or "
                                                "s3://), on the same problems")
    key: Literal["problem_id", "id"] = Field("problem_id", description="join on problem_id (stable hash of the "
                                             "normalised problem text) or on the given id (a '#k' suffix, as in "
                                             "'<uuid>#<k>' generations or renamed duplicates, is ignored)")
    names: list[str] | None = Field(None, description="a name per source, in order (default A, B, C, …)")

    @model_validator(mode="after")
    def _check(self):
        if len(self.inputs) < 2:
            raise ValueError("pairing needs two or more sources")
        if self.names is not None and (len(self.names) != len(self.inputs) or len(set(self.names)) != len(self.names)):
            raise ValueError("give one distinct name per source")
        return self

    def source_names(self) -> list[str]:
        return list(self.names or string.ascii_uppercase[:len(self.inputs)])


# The curation settings a pairing reads its sources with.
READ_FIELDS = tuple(n for n in PairConfig.model_fields if n in CurateConfig.model_fields and n not in ("output",
                                                                                                   "plugins"))


class CostSettings(SettingsGroup):
    """What `raypipe experiment plan` assumes to price the study in GPU-hours (also on the results page)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mfu: float = Field(0.40, gt=0, le=1, description="training model FLOPs utilisation")
    eval_mfu: float = Field(0.10, gt=0, le=1, description="generation FLOPs utilisation (decoding is memory-bound)")
    peak_tflops: float = Field(989.0, gt=0, description="peak dense bf16 TFLOP/s of one GPU (H100/H200: 989)")
    parameters: float | None = Field(None, gt=0, description="student parameters (default: counted from the "
                                     "model's config.json when it can be read)")
    generated_share: float = Field(0.5, gt=0, le=1, description="expected mean generated tokens as a share of "
                                   "max_tokens (the upper bound uses 1.0)")
    assumed_records: int = Field(100_000, gt=0, description="records per source when a source cannot be read")
    assumed_tokens_per_record: int = Field(12_000, gt=0, description="tokens per trajectory when a source cannot "
                                           "be read")
    assumed_paired_share: float = Field(0.5, gt=0, le=1, description="share of records that pair, when unknown")
    assumed_problems: int = Field(100, gt=0, description="problems per benchmark when its file cannot be read")
    sample_records: int = Field(200, gt=0, description="records read from each source to estimate token counts")
    read_timeout_s: float = Field(30.0, gt=0, description="seconds allowed for reading each source's sample",
                                  validation_alias=AliasChoices("read_timeout_s", "timeout_s"))


class ExperimentConfig(Settings, OutputSettings, ModelSettings, BenchmarksSettings, SeedSettings, StorageSettings):
    DEFAULTS: ClassVar[dict] = {"model": "tiny"}
    HELP: ClassVar[dict] = {
        "output": "experiment folder, local or s3://: arms/<arm>/{curate,sft,eval}/ and results.*",
        "model": "base model: Hugging Face path, s3:// copy, or 'tiny'",
        "benchmarks": "benchmarks every arm is evaluated on",
        "seed": "seed of every stage (a stage section may set its own)",
        "s3_endpoint": "S3 endpoint URL, passed to every stage", "s3_region": "S3 region, passed to every stage"}

    name: str = Field("branching-study", description="the study's name, on the results page")
    source_a: str = Field(description="input of source A (file, folder, glob; local or s3://)")
    source_b: str = Field(description="input of source B, on the same problems")
    drop: float = Field(0.10, gt=0, lt=1, description="fraction dropped in the drop arms / steps deleted")
    seeds: list[int] | None = Field(None, description="repeat every arm's training and evaluation once per seed "
                                    "(arms/<arm>/seed-<k>/sft, …/eval; curation and the budget stay those of `seed`), "
                                    "so the table gives intervals over seeds; unset: once, with `seed`")
    arms: list[str] = Field(list(STANDARD_ARMS), description="arms to run: "
                            f"{', '.join(STANDARD_ARMS + OPTIONAL_ARMS)}")
    pair_by: Literal["problem_id", "id", "none"] = Field(
        "problem_id", description="pair the sources first (raypipe pair): keep the problems where both have a "
        "verified-correct trajectory, joined on problem_id or the given id; none: each arm reads its whole source")
    budget: Literal["steps", "rows", "tokens", "none"] = Field(
        "steps", description="matched training budgets: every arm the same optimizer steps (steps), also the same "
        "rows (rows) or the same supervised tokens (tokens, needs train.pack), by seeded sampling; none: unmatched")
    cost: CostSettings = Field(default_factory=CostSettings, description="assumptions of the GPU-hour estimate")
    curate: CurateSection = Field(default_factory=CurateSection, description="curation settings of every arm")
    train: TrainSection = Field(default_factory=TrainSection, description="SFT settings of every arm")
    eval: EvalSection = Field(default_factory=EvalSection, description="evaluation settings of every arm")
    judge: JudgeSection | None = Field(None, description="step judge of each source's (paired) traces, `raypipe "
                                       "judge` settings (e.g. backend openai, an OpenAI-compatible endpoint); unset: "
                                       "no judge stage")
    task: MakeTaskConfig | None = Field(None, description="make the model organism first (`raypipe make-task` "
                                        "settings; its output holds the teachers, benchmarks and student the other "
                                        "settings name); unset: no such stage")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError("seeds must list distinct seeds")
        return seeds

    @field_validator("arms")
    @classmethod
    def _known(cls, arms: list[str]) -> list[str]:
        unknown = [a for a in arms if a not in STANDARD_ARMS + OPTIONAL_ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {', '.join(STANDARD_ARMS + OPTIONAL_ARMS)}")
        if len(set(arms)) != len(arms):
            raise ValueError("an arm is listed twice")
        return arms

    @model_validator(mode="after")
    def _controlled(self) -> "ExperimentConfig":
        train, ev = self.train.model_dump(exclude_unset=True), self.eval.model_dump(exclude_unset=True)
        if "prompt_version" in train and "prompt_version" in ev and train["prompt_version"] != ev["prompt_version"]:
            raise ValueError("train.prompt_version and eval.prompt_version differ: a model is evaluated on the prompt "
                             "it was trained on (set one of them)")
        if train.get("template") not in (None, "auto"):
            raise ValueError("train.template must be auto here: evaluation renders prompts through the model's chat "
                             "template, and training must render the same string")
        window = ev.get("max_model_len")
        if window and (ev.get("max_tokens", 32768) >= window or train.get("max_len", 0) > window):
            raise ValueError(f"eval.max_model_len {window} must exceed eval.max_tokens (room for the prompt) and "
                             "cover train.max_len (the context the student was trained with)")
        curate = self.curate.model_dump(exclude_unset=True)
        for key in GRADING:
            if key in curate and key in ev and curate[key] != ev[key]:
                raise ValueError(f"curate.{key} and eval.{key} differ: the student is graded as its data was (set "
                                 "one of them)")
        if self.budget == "tokens" and not train.get("pack"):
            raise ValueError("budget: tokens needs train.pack: true (each step then holds max_len token slots; "
                             "unpacked rows of different lengths cannot match steps and tokens at once)")
        return self

    def seed_list(self) -> list[int]:
        return self.seeds or [self.seed]

    def stage_dir(self, arm: str, stage: str, seed: int | None = None) -> str:
        """Where an arm's stage writes: arms/<arm>/<dir>, under seed-<k>/ for training and evaluation with `seeds`."""
        root = io.join(self.output, "arms", arm)
        if stage == "curate" or self.seeds is None:
            return io.join(root, STAGE_DIRS[stage])
        return io.join(root, f"seed-{self.seed if seed is None else seed}", STAGE_DIRS[stage])

    def grading(self) -> dict:
        """How curation graded answers, which evaluation follows unless its section says otherwise."""
        return {k: v for k, v in self.curate.model_dump(exclude_unset=True).items() if k in GRADING}

    def prompt_version(self) -> str | None:
        """The prompt both stages use, when the experiment names one."""
        return self.train.prompt_version or self.eval.prompt_version


def load_experiment(path: str, overrides: dict | None = None) -> ExperimentConfig:
    data = yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment file holds a mapping of setting: value")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ExperimentConfig.model_validate(data)


class ExperimentCommandBase(Settings):
    config: CliPositionalArg[list[str]] = Field(description="experiment YAML (see cluster/experiments/); `plan "
                                                "CONFIG` prints the stages' rows, tokens and GPU-hours instead of "
                                                "running")
    dry_run: bool = Field(False, description="print every stage, whether it is done, and its effective settings")

    @field_validator("config")
    @classmethod
    def _shape(cls, v: list[str]) -> list[str]:
        if len(v) == 1 or (len(v) == 2 and v[0] == "plan"):
            return v
        raise ValueError("give CONFIG, or plan CONFIG")


OVERRIDES = ("output", "model", "arms")  # the config's settings a command line may override
ExperimentCommandSettings = create_model(
    "ExperimentCommandSettings", __base__=ExperimentCommandBase,
    __doc__="`raypipe experiment`: the config file, and the settings of it the command line overrides",
    **{n: (ExperimentConfig.model_fields[n].annotation | None,
           Field(None, description=f"{ExperimentConfig.model_fields[n].description} (overrides the config's)"))
       for n in OVERRIDES})
ExperimentCommandSettings.GENERATED_FROM = ExperimentConfig
