"""`raypipe` console script: one subcommand per job; each lives in raypipe/commands/ and imports Ray lazily."""
from __future__ import annotations

import argparse
import sys

from raypipe import __version__
from raypipe.commands import add_command, commands, execute, parse
from raypipe.core.flags import HelpFormatter
from raypipe.ray_env import local_ray_defaults

DESCRIPTION = ("Curate long chain-of-thought training data on Ray: verify each trajectory's answer, measure how much "
               "its reasoning branches, drop the most branching ones, then train and evaluate on what is kept.")
EPILOG = """example:
  raypipe curate --input ../shared/data/trajectories --output out/
  raypipe curate --help"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with the command line `argv`, just enough of it to parse that line."""
    parser = argparse.ArgumentParser(prog="raypipe", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands(argv):
        add_command(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    local_ray_defaults()  # before any command imports Ray
    argv = sys.argv[1:] if argv is None else argv
    return execute(parse(build_parser(argv), argv))


if __name__ == "__main__":
    sys.exit(main())
