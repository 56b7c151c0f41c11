"""Subcommands of the `raypipe` CLI (and of the thin jobs/*.py entry points)."""

import argparse
import os


def submitted_job(prog: str, description: str | None, add_arguments, run, argv: list[str] | None = None, **fixed) -> int:
    """A jobs/*.py entry point: the command's own flags, and the job joins the cluster it was submitted to."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    for k, v in fixed.items():
        setattr(args, k, v)
    os.environ.setdefault("RAY_ADDRESS", "auto")
    return run(args)
