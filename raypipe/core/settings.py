"""One definition per setting: a command's pydantic model is its CLI, its YAML file and what the experiment passes.

Flags come from the model's fields through pydantic-settings' CLI support: the flag is the field name in kebab case,
its help the field's description, its choices the field's Literal (or registry), booleans get `--x / --no-x`, and
an `AliasChoices` alias is an old spelling that still works (as a flag and as a YAML key). `--config FILE.yaml`
takes any of the same keys; flags given on the command line win. Whatever the source, one validation.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import types
import typing
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import CliSettingsSource, SettingsError

from raypipe.core import flags
from raypipe.core.registry import load_plugins, registry_of

T = TypeVar("T", bound=BaseModel)
CONFIG_HELP = "YAML file with any of these settings (flags given here win)"


class SettingsGroup(BaseModel):
    """Base of every settings model: a command's, and the small shared ones it is made of.

    A setting that several commands share is declared once, in a small group of its own (StorageSettings,
    StructureSettings, Sampling, …) that the commands inherit. A model gives such a setting its own default in
    DEFAULTS and says what it means for it in HELP; neither redeclares the field, so its name, type and checks stay
    one definition (tests/test_settings.py holds every model to that).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {}
    HELP: ClassVar[dict[str, str]] = {}
    # A shared setting that names a member of a registry the model chooses (e.g. `backend`): field -> registry.
    REGISTRIES: ClassVar[dict[str, Any]] = {}
    # A model generated from another (create_model): its fields are that model's, not definitions of their own.
    GENERATED_FROM: ClassVar[type | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        defaults, helps = cls.__dict__.get("DEFAULTS") or {}, cls.__dict__.get("HELP") or {}
        unknown = (set(defaults) | set(helps)) - set(cls.model_fields)
        if unknown:
            raise TypeError(f"{cls.__name__}: DEFAULTS/HELP name settings it does not have: {sorted(unknown)}")
        if defaults or helps:
            for name, value in defaults.items():
                cls.model_fields[name].default = value
            for name, text in helps.items():
                cls.model_fields[name].description = text
            cls.model_rebuild(force=True)

    @model_validator(mode="after")
    def _registered(self) -> "SettingsGroup":
        for name, registry in self.REGISTRIES.items():
            registry.check(getattr(self, name))
        return self


class Settings(SettingsGroup):
    """Base of every command's model: an unknown or misspelled key is an error that names it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    plugins: list[str] = Field([], description="modules imported first: they register your own operators "
                               "(see 'Extending raypipe' in the README); ship them with the job's runtime_env")

    # Settings that change how a job runs, not what it writes: left out of its config hash.
    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("plugins",)
    # The fields the hash held when it was introduced; a field added later counts only when it differs from its
    # default, so an earlier run's hash, and its resume, stay valid.
    HASHED_SINCE_V1: ClassVar[tuple[str, ...] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("plugins"):
            plugins = data["plugins"]
            load_plugins([p.strip() for p in plugins.split(",")] if isinstance(plugins, str) else plugins)
        return data

    def result_fields(self) -> dict:
        """The settings that decide a run's outputs."""
        out = self.model_dump(mode="json", exclude=set(self.EXECUTION_FIELDS))
        if self.HASHED_SINCE_V1 is not None:
            defaults = type(self)._defaults()
            out = {k: v for k, v in out.items() if k in self.HASHED_SINCE_V1 or k not in defaults or v != defaults[k]}
        return out

    def hash(self) -> str:
        return config_hash(self.result_fields())

    @classmethod
    def _defaults(cls) -> dict:
        return {name: json.loads(json.dumps(f.get_default(call_default_factory=True), default=str))
                for name, f in cls.model_fields.items() if not f.is_required()}


class SeedSettings(SettingsGroup):
    seed: int = Field(0, description="seed of everything the command draws at random: the same seed, the same result")


class OutputSettings(SettingsGroup):
    output: str = Field(description="output folder, local or s3://")


class InputSettings(SettingsGroup):
    input: str = Field(description="trajectories: a file, folder or glob of JSONL (.gz/.zst) or Parquet; local or "
                       "s3://")


class SourceSettings(SettingsGroup):
    source: str | None = Field(None, description="a source (model) name")


class LimitSettings(SettingsGroup):
    limit: int | None = Field(None, ge=1, description="only the first N items")


class OverwriteSettings(SettingsGroup):
    overwrite: bool = Field(False, description="replace an earlier run in --output made with other settings")


class BackendSettings(SettingsGroup):
    """The engine that runs a command's model; each command names its registry in REGISTRIES["backend"]."""

    backend: str = Field(description="the engine that runs the model")


class BatchSettings(SettingsGroup):
    batch_size: int = Field(8, ge=1, description="items processed together")


class ModelSettings(SettingsGroup):
    model: str | None = Field(description="causal LM: a Hugging Face checkpoint folder, an s3:// copy of one, a hub "
                              "id, or 'tiny'")

    @field_validator("model")
    @classmethod
    def _given(cls, v):
        if v is None and cls.model_fields["model"].default is not None:  # None only where None is the default
            raise ValueError("a model is needed")
        return v


class ReplicaSettings(SettingsGroup):
    replicas: int = Field(1, ge=1, description="replicas of the deployment")


class ReplicaCpuSettings(SettingsGroup):
    replica_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica")


class HttpSettings(SettingsGroup):
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 for every interface)")
    port: int = Field(8000, description="HTTP port")
    route_prefix: str = Field("/", description="route prefix of the application")


def field_registry(field, model: type[BaseModel] | None = None, name: str | None = None) -> Any:
    """The registry a field names a member of (a `registered(...)` field, optional or not, or one the model's
    REGISTRIES names), else None."""
    if model is not None and name in getattr(model, "REGISTRIES", {}):
        return model.REGISTRIES[name]
    options = [field.annotation, *typing.get_args(field.annotation)] if typing.get_origin(field.annotation) in (
        typing.Union, types.UnionType) else [field.annotation]
    return next((registry_of(a) for a in [*options, *field.metadata] if registry_of(a)), None)


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def yaml_file(path: str) -> Any:
    """A YAML file's content; a syntax error is a ValueError naming the file, line, column and problem."""
    with open(path) as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
            if context and start is not None:
                problem += f" ({context} at line {start.line + 1}, column {start.column + 1})"
            raise ValueError(f"{path}{at}: not valid YAML: {problem}") from None


def read_yaml(path: str) -> dict:
    data = yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a settings file holds a mapping of setting: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Flags for every field of `model`, plus --config (unless the model names a positional `config`)."""
    if "config" not in model.model_fields:
        parser.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    source = CliSettingsSource(model, root_parser=parser, cli_parse_args=False, cli_kebab_case=True,
                               cli_implicit_flags=True, cli_hide_none_type=True, cli_avoid_json=True,
                               cli_enforce_required=False, cli_exit_on_error=True,
                               add_argument_method=_add_argument)
    for action in parser._actions:
        field = flags.field_of(model, action.dest)
        if field is None:
            continue
        registry = field_registry(field, model, action.dest)
        if registry is not None:  # registry-backed fields: list the names registered now
            action.metavar = "{" + ",".join(registry.names()) + "}"
        flags.tidy(action, field)
    parser.set_defaults(_settings_source=source, _settings_model=model)


def _add_argument(parser: argparse.ArgumentParser, *names: str, **kwargs: Any) -> argparse.Action:
    """pydantic-settings spells a one-letter field `-n`; it is also `--n`, the flag's name everywhere else."""
    long = [f"-{n}" for n in names if len(n) == 2 and n[0] == "-" and n[1] != "-"]
    return parser.add_argument(*names, *long, **kwargs)


def given(args: argparse.Namespace) -> dict:
    """The settings given as flags (only those) of a namespace parsed by a parser built with add_arguments."""
    try:
        return dict(args._settings_source(parsed_args=args)())
    except SettingsError as e:  # a value the flag's own syntax refuses (e.g. --fields a=b,c): name the flag
        m = re.match(r"Parsing error encountered for (\w+): (.*)", str(e))
        if not m:
            raise ValueError(str(e)) from None
        action = next((a for a in getattr(args, "_parser", argparse.ArgumentParser())._actions
                       if a.dest == m.group(1)), None)
        form = f"expects {action.metavar}: " if action is not None and action.metavar else ""
        raise ValueError(f"--{m.group(1).replace('_', '-')}: {form}{m.group(2)}") from None


def load(model: type[T], path: str | None = None, values: dict | None = None) -> T:
    """The model from a YAML file (optional) overlaid with `values`; one validation."""
    data = read_yaml(path) if path else {}
    data.update({k: v for k, v in (values or {}).items() if v is not None})
    return model.model_validate(data)


def from_args(args: argparse.Namespace) -> BaseModel:
    return load(args._settings_model, config_path(args), given(args))


def to_yaml(settings: BaseModel) -> str:
    """Every field's value, false and empty ones included: what a stage receives is exactly what was set."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)


def config_path(args: argparse.Namespace) -> str | None:
    return None if "config" in args._settings_model.model_fields else getattr(args, "config", None)


def describe_error(e: ValidationError, model: type[BaseModel] | None = None, given_flags: set[str] = frozenset(),
                   config: str | None = None) -> str:
    """One line per error, naming the flag for a value given on the command line, else the key (and the file)."""
    lines = []
    for err in e.errors(include_url=False, include_input=False):
        where = flags.where(err["loc"], set(given_flags), config)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields) if model is not None and len(err["loc"]) == 1 else []
            msg = "unknown setting" + (flags.suggest(str(err["loc"][-1]), known) if known else " (misspelled?)")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
