"""raypipe loss-probe: token-level SFT loss of a causal LM on trajectories, per source (Ray Data model actors)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="trajectories (file, folder, glob; local or s3://) or a curation output folder")
    p.add_argument("--output", required=True, help="output folder: trajectories/ (Parquet), summary.json, report.html")
    p.add_argument("--model", default="tiny", help="causal LM checkpoint folder (e.g. an SFT job's <output>/model) or 'tiny'")
    p.add_argument("--window", type=int, help="tokens per forward pass; the KV cache carries the prefix (default 1024)")
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens of prompt + response (default: the model's context)")
    p.add_argument("--routine-threshold", type=float, help="loss (nats) below which a token counts as routine (default 0.05)")
    p.add_argument("--lexicon", help="branch-marker lexicon: paper, switch, paper-zh or a YAML file (default paper)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--limit", type=int, help="only the first N trajectories")
    p.add_argument("--keep-token-losses", action="store_true", default=None, help="also store every token's loss")
    p.add_argument("--batch-size", type=int, help="trajectories per actor call (results do not depend on it)")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU, else CPUs - 1)")
    p.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (default 1 when the cluster has GPUs)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", help="S3 region")


def register(sub) -> None:
    p = sub.add_parser("loss-probe", help="token-level loss probe (the paper's routine vs key tokens)", description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from raypipe.diagnostics.loss_job import LossConfig, run_loss_probe

    values = {k: v for k, v in vars(args).items() if k not in ("func", "command") and v is not None}
    try:
        config = LossConfig(**values)
    except ValidationError as e:
        print(f"raypipe loss-probe: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    try:
        run_loss_probe(config)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"raypipe loss-probe: {e}", file=sys.stderr)
        return 2
    return 0


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/loss_probe.py: same flags; joins the cluster it was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/loss_probe.py", __doc__, add_arguments, run, argv)
