"""`raypipe` console script: one subcommand per job; each lives in raypipe/commands/ and imports Ray lazily."""
from __future__ import annotations

import argparse
import importlib
import sys

from raypipe import __version__

# Modules under raypipe.commands that define `register(subparsers)`.
COMMANDS = ["curate", "sample", "loss_probe", "judge", "diagnose", "eval", "serve_model", "serve", "train", "experiment"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"raypipe.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
