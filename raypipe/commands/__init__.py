"""Subcommands of the `raypipe` CLI (and of the thin jobs/*.py entry points)."""
