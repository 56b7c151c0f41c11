"""raypipe train: supervised fine-tuning on a curated dataset with Ray Train + DeepSpeed."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="curation output folder (uses curated/) or Parquet folder; local or s3://")
    p.add_argument("--model", help="Hugging Face checkpoint path, s3:// copy of one, or 'tiny'")
    p.add_argument("--output", help="output folder, local or s3://: model/, train_summary.json, ray/ checkpoints")
    p.add_argument("--config", help="YAML file with any of these options (flags given here win)")
    p.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage (default 2)")
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON replacing the generated config ('auto' values filled)")
    p.add_argument("--max-len", type=int, help="max tokens per trajectory / packed row (default 4096)")
    p.add_argument("--overlong", choices=["drop", "truncate"], help="rows longer than --max-len (default drop; counted)")
    p.add_argument("--pack", action="store_true", default=None, help="pack trajectories into rows, isolated per document")
    p.add_argument("--attention", help="packed isolation path: auto, flash_varlen, flex, sdpa_block")
    p.add_argument("--template", help="auto (tokenizer chat template), chatml, plain")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--optimizer", choices=["torch-adamw", "fused-adam", "cpu-adam"])
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)
    p.add_argument("--checkpoint-every", type=int, help="optimizer steps between checkpoints (0: at the end)")
    p.add_argument("--storage", help="Ray Train storage_path for checkpoints (default <output>/ray)")
    p.add_argument("--seed", type=int)
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-region")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (ignored when joining a cluster)")


def register(sub) -> None:
    p = sub.add_parser("train", help="SFT on a curated dataset (Ray Train + DeepSpeed)", description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from pydantic import ValidationError

    from raypipe.train.config import load_train_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    try:
        cfg = load_train_config(args.config, overrides)
    except ValidationError as e:
        print(f"raypipe train: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    from raypipe.train.run import run_train

    try:
        summary = run_train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"raypipe train: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a failed Ray Train run (worker error, lost node): checkpoints stay for a restart
        print(f"raypipe train: training failed: {str(e)[:2000]}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("final_loss", "steps", "tokens_per_s", "model_path")}))
    return 0


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/train_sft.py: same flags; joins the cluster it was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/train_sft.py", __doc__, add_arguments, run, argv)
