"""How a settings model's flags read: placeholders and defaults in --help, hidden settings, and the flag (not the
field) that errors name, with a suggestion for a misspelled one. Presentation only: raypipe.core.settings builds
the flags from the models."""
from __future__ import annotations

import argparse
import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# A setting marked HIDDEN (`x: Annotated[int | None, HIDDEN] = Field(...)`) is accepted as a flag and a YAML key but
# left out of --help: for tests and diagnostics, not for users.
HIDDEN = argparse.SUPPRESS

# A flag's placeholder, from the setting's name (first match), else from its type.
BY_NAME = (
    (r"^engine_kwargs$", "JSON"),
    (r"^fields$", "FIELD=PATH"),
    (r"^benchmark_files$", "NAME=PATH"),
    (r"(^|_)(endpoint|scorer|url)$", "URL"),
    (r"_env$", "VAR"),
    (r"(^|_)(input|output|outputs|data|dir|manifest|file|files|storage|config|responses|path|runs)$", "PATH"),
    (r"^model$", "MODEL"),
    (r"^host$", "HOST"),
    (r"prefix$", "PREFIX"),
    (r"^lexicon$", "NAME|FILE"),
    (r"^segmenter$", "NAME|REGEX"),
    (r"^plugins$", "MODULE"),
    (r"region$", "REGION"),
    (r"dtype$", "DTYPE"),
    (r"version$", "VERSION"),
    (r"^think_(open|close)$", "TAG"),
    (r"^abort_when$", "RULE"),
    (r"(source|sources|name|names|benchmarks|arms|type)$", "NAME"),
)
BY_TYPE = {int: "N", float: "X", str: "TEXT"}
NO_DEFAULT = ("(default: None)", "(default: [])", "(default: {})")


def _plain(annotation: Any) -> Any:
    """The annotation without `| None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def metavar(name: str, field: FieldInfo) -> str | None:
    """A readable placeholder (PATH, N, NAME,...) for the flag of a setting; None keeps argparse's own."""
    annotation = _plain(field.annotation)
    origin = typing.get_origin(annotation)
    word = next((w for pattern, w in BY_NAME if re.search(pattern, name)), None)
    if word and ("=" in word or word == "JSON"):
        return word if word == "JSON" else f"{word},..."
    if origin in (list, tuple, set):
        item = _plain((typing.get_args(annotation) or (str,))[0])
        return f"{word or BY_TYPE.get(item, 'VALUE')},..."
    if origin is dict:
        return "KEY=VALUE,..."
    if annotation in (int, float):
        return BY_TYPE[annotation]
    if annotation is str:
        return word or BY_TYPE[str]
    return None


def field_of(model: type[BaseModel], dest: str) -> FieldInfo | None:
    """The field behind an argparse dest (`a.b` for a field of a nested settings model)."""
    head, _, rest = dest.partition(".")
    field = model.model_fields.get(head)
    if field is None or not rest:
        return field
    inner = _plain(field.annotation)
    return field_of(inner, rest) if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def tidy(action: argparse.Action, field: FieldInfo) -> None:
    """The flag's placeholder, and its help without a second or an empty default."""
    if action.help == argparse.SUPPRESS or HIDDEN in field.metadata:
        action.help = argparse.SUPPRESS
        return
    if action.option_strings and action.nargs != 0 and not str(action.metavar or "").startswith("{"):
        action.metavar = metavar(action.dest.rsplit(".", 1)[-1], field) or action.metavar
    description = (field.description or "").replace("%", "%%")
    help_ = action.help or ""
    if help_.startswith(description):
        tail = help_[len(description):].strip()
        if tail in NO_DEFAULT or (tail.startswith("(default") and "default" in description.lower()):
            action.help = description


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the indented lines of a description or epilog (its examples) are kept as
    written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in re.split(r"\n\s*\n", text.strip("\n")):
            runs: list[tuple[bool, list[str]]] = []  # (indented?, lines), consecutive lines of a kind together
            for ln in para.splitlines():
                raw = ln.startswith("  ")
                if runs and runs[-1][0] == raw:
                    runs[-1][1].append(ln)
                else:
                    runs.append((raw, [ln]))
            out.append("\n".join("\n".join(indent + ln for ln in lines) if raw else
                                 super(HelpFormatter, self)._fill_text(" ".join(x.strip() for x in lines), width,
                                                                       indent) for raw, lines in runs))
        return "\n\n".join(out)


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--")]


def suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's 'unrecognized arguments' for a command's parser, naming the closest flag of that command."""
    known = options(parser)
    hints = [suggest(x.split("=", 1)[0], known) for x in extras if x.startswith("--")]
    return f"unrecognized arguments: {' '.join(extras)}" + next((h for h in hints if h), "")


def where(loc: tuple, flags: set[str], config: str | None) -> str:
    """What an error names: the flag for a value given as one, else the key (in the YAML file, when there is one)."""
    if not loc:
        return "settings"
    key, rest = str(loc[0]), "".join(f".{x}" for x in loc[1:])
    if key in flags:
        return f"--{key.replace('_', '-')}{rest}"
    return f"{key}{rest} (in {config})" if config else f"{key}{rest}"
