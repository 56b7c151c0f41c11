"""Name -> class registries for raypipe's extension points, and the config type that names one of their members.

A registry holds small typed operators (branch proxies, selection rules, input formats, graders, eval and judge
backends). Adding one is one class with `@REGISTRY.register("name")`. A config field typed `registered(REGISTRY)`
accepts the registered names only, and its JSON schema and CLI help list them at the time they are built, so
an operator from a plugin module shows up once the module is imported.

Operators outside raypipe reach every process (the driver, Ray actors, Serve replicas) in two ways:
- a module named in a config's `plugins` list, imported before the config is validated (ship it with the job's
  runtime_env: `py_modules` or `working_dir`);
- an entry point in the `raypipe.plugins` group of an installed package, imported the first time any registry
  is read.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema
from typing_extensions import Annotated

T = TypeVar("T")
ENTRY_POINT_GROUP = "raypipe.plugins"
_entry_points_loaded = False


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import the named plugin modules, and (once per process) every `raypipe.plugins` entry point."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()
    for name in modules:
        importlib.import_module(name)


class Registry(Generic[T]):
    """Members of one kind by name, in registration order: operator classes (`register`, a decorator) or typed
    entries (`add`: lexicons, segmenters, prompt templates, benchmarks)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    @classmethod
    def of(cls, kind: str, entries: list) -> "Registry":
        """A registry of typed entries, each under its own `name`."""
        registry = cls(kind)
        for entry in entries:
            registry.add(entry.name, entry)
        return registry

    def add(self, name: str, entry: T) -> T:
        """A typed entry (an instance, not a class) under its name."""
        if name in self._items and self._items[name] != entry:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self):
        return iter(self.names())

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list:
        load_plugins()
        return list(self._items.values())

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' is registered twice: {self._items[name]} and {cls}")
            self._items[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls
        return add

    def names(self) -> list[str]:
        load_plugins()
        return list(self._items)

    def get(self, name: str) -> type[T]:
        load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} '{name}'; choose one of {', '.join(self._items)}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def items(self) -> list[tuple[str, type[T]]]:
        load_plugins()
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items

    def check(self, name: str) -> str:
        self.get(name)
        return name


class _Choices:
    """JSON schema of a registered name: an enum of the registry's names when the schema is built."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["enum"] = self.registry.names()
        return out


def registered(registry: Registry) -> Any:
    """The type of a config field that names a member of `registry` (validated against it, listed in schemas)."""
    return Annotated[str, AfterValidator(registry.check), _Choices(registry)]


def registry_of(annotation: Any) -> Registry | None:
    """The registry behind a `registered(...)` annotation (or one item of a field's metadata, where pydantic puts
    it), else None."""
    if isinstance(annotation, _Choices):
        return annotation.registry
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, _Choices):
            return meta.registry
    return None
