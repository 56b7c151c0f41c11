"""The `raypipe` CLI's commands (and the thin jobs/*.py entry points): each is a settings model and a run function.

A command's flags, its --config YAML keys and what the experiment runner passes it are all the fields of its
model (raypipe.core.settings). Heavy imports (Ray, torch) happen inside `run`, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from pydantic import BaseModel, ValidationError

from raypipe.core import flags, settings

# Modules under raypipe.commands that define COMMAND (the command's name, with _ for -), in the order
# `raypipe --help` lists them.
MODULES = ("curate", "inspect", "pair", "make_sample", "serve", "train", "eval", "loss_probe", "judge", "diagnose",
           "serve_model", "experiment", "make_task", "generate")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    model: type[BaseModel]
    run: Callable[[BaseModel], int]
    description: str | None = None
    subcommands: tuple["Command", ...] = field(default=())
    example: str = ""  # command lines shown at the end of its --help, one per line


class Refused(Exception):
    """The command cannot use what it was given: `execute` prints the reason on one line and exits 2."""


@contextmanager
def refusing(*errors: type[BaseException]):
    """Inside, an error of these types refuses the command (exit 2 and its message) instead of a traceback."""
    try:
        yield
    except errors as e:
        raise Refused(str(e)) from e


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """parse_args, except that an unknown flag is reported by the command it was given to (its usage), with the
    closest flag that command has."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "_parser", parser).error(flags.unrecognized(getattr(args, "_parser", parser), extras))
    return args


def commands(argv: list[str] | None = None) -> list[Command]:
    """Every command; with the command line `argv`, only the command it names (when it names one): a run imports
    its own command's settings, not every command's."""
    named = next((a.replace("-", "_") for a in argv or () if not a.startswith("-")), None)
    modules = [named] if named in MODULES else MODULES
    return [importlib.import_module(f"raypipe.commands.{m}").COMMAND for m in modules]


def add_command(sub, command: Command, parent: str = "raypipe") -> argparse.ArgumentParser:
    epilog = "example:\n" + "\n".join(f"  {line}" for line in command.example.strip().splitlines()) \
        if command.example else None
    p = sub.add_parser(command.name, help=command.help, description=command.description or command.help,
                       epilog=epilog, formatter_class=flags.HelpFormatter)
    settings.add_arguments(p, command.model)
    p.set_defaults(_command=command, _parser=p, _name=f"{parent} {command.name}")
    if command.subcommands:
        nested = p.add_subparsers(dest=f"_{command.name}_subcommand", metavar="SUBCOMMAND")
        for sc in command.subcommands:
            add_command(nested, sc, f"{parent} {command.name}")
    return p


def execute(args: argparse.Namespace) -> int:
    """Validate the parsed flags (with --config) into the command's model, then run it."""
    try:
        model = settings.from_args(args)
    except ValidationError as e:
        as_flags = set(settings.given(args)) & {a.dest for a in args._parser._actions if a.option_strings}
        detail = settings.describe_error(e, args._settings_model, as_flags, settings.config_path(args))
        print(f"{args._name}: invalid settings:\n{detail}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"{args._name}: {e}", file=sys.stderr)
        return 2
    try:
        return int(args._command.run(model) or 0)
    except Refused as e:
        print(f"{args._name}: {e}", file=sys.stderr)
        return 2


def submitted_job(name: str, argv: list[str] | None = None) -> int:
    """A jobs/*.py entry point: the command's own flags; the job joins the cluster it was submitted to."""
    command = importlib.import_module(f"raypipe.commands.{name.replace('-', '_')}").COMMAND
    parser = argparse.ArgumentParser(prog=f"jobs ({name})")
    add_command(parser.add_subparsers(dest="_job"), command)
    args = parse(parser, [name, *(sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("RAY_ADDRESS", "auto")
    return execute(args)
