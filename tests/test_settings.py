"""One definition per setting: every setting name is declared as a field in exactly one settings model (a command
inherits the small shared models it is made of and sets their defaults and help without redeclaring them)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict

import raypipe
from raypipe.core.settings import SettingsGroup


def settings_models() -> list[type[SettingsGroup]]:
    for info in pkgutil.walk_packages(raypipe.__path__, "raypipe."):
        importlib.import_module(info.name)
    seen, todo = [], [SettingsGroup]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


def declarations() -> dict[str, list[str]]:
    """setting name -> the models whose own class body declares it (generated models left out: their fields are
    their source's)."""
    where = defaultdict(list)
    for cls in settings_models():
        if cls.__dict__.get("GENERATED_FROM") is not None or cls.__module__.startswith("pydantic"):
            continue
        for name in cls.__dict__.get("__annotations__", {}):
            if name in cls.model_fields:
                where[name].append(f"{cls.__module__}.{cls.__qualname__}")
    return where


def test_every_setting_is_declared_once():
    twice = {name: owners for name, owners in declarations().items() if len(owners) > 1}
    assert not twice, f"settings declared in more than one model (inherit one shared model instead): {twice}"


def test_the_check_sees_every_command_and_finds_a_second_declaration():
    from pydantic import Field

    from raypipe.commands import commands

    models = set(settings_models())
    for command in commands():
        assert command.model in models, command.name
        for sub in command.subcommands:
            assert sub.model in models, sub.name
    assert len(declarations()) > 100

    class Rogue(SettingsGroup):  # a command that copies s3_endpoint instead of inheriting StorageSettings
        s3_endpoint: str | None = Field(None, description="S3 endpoint URL")

    try:
        assert len(declarations()["s3_endpoint"]) == 2
    finally:
        del Rogue
        import gc

        gc.collect()
