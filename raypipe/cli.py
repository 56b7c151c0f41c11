"""`raypipe` console script: one subcommand per job; each lives in raypipe/commands/ and imports Ray lazily."""
from __future__ import annotations

import argparse
import sys

from raypipe import __version__
from raypipe.commands import add_command, commands, execute


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands():
        add_command(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    return execute(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
