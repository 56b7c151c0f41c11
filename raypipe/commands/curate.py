"""raypipe curate: verify, measure branching and select, on Ray Data."""
from __future__ import annotations

import argparse
import sys

HELP = {
    "input": "input file, folder or glob of JSONL (.gz/.zst) or Parquet; local or s3://",
    "output": "output folder, local or s3://: curated/ dropped/ rejects/ manifest.json report.html",
    "config": "YAML file with any of these options (flags given here win)",
    "drop_top": "fraction q of verified-correct rows to drop per source (default 0.10; k = floor(q*n + 0.5))",
    "rule": "top: highest branch_score; random: seeded random rows; longest: most tokens; keep-all: drop none",
    "proxy": "branch_score: keyword-share (branch_ratio) or step-ratio (steps / reference source's steps)",
    "lexicon": "branch-marker lexicon: paper, switch, paper-zh, or a YAML file",
    "segmenter": "step separator: blank (blank lines), line, or a regex",
    "reference_source": "source whose steps per problem define step_ratio = 1 (needed by --proxy step-ratio)",
    "seed": "seed for --rule random and --delete-steps",
    "keep_incorrect": "do not drop rows whose verdict is not 'correct'",
    "delete_steps": "ablation: delete this fraction of reasoning steps (seeded) from every kept row",
    "verify_timeout_s": "wall-clock bound in seconds on each answer comparison",
    "s3_endpoint": "S3 endpoint URL (else AWS_ENDPOINT_URL); credentials and region from the AWS settings",
    "s3_region": "S3 region (else AWS_REGION / AWS_DEFAULT_REGION)",
    "overwrite": "replace an earlier run in --output made with a different config",
    "num_cpus": "CPUs for a local Ray (ignored when joining a cluster)",
    "actors": "scoring actors (default: one per CPU, at most one per shard)",
    "verify_workers": "math-verify worker processes per scoring actor (default 1)",
    "synthetic": "label the report: the input is a generated sample",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", help=HELP["input"])
    p.add_argument("--output", help=HELP["output"])
    p.add_argument("--config", help=HELP["config"])
    p.add_argument("--drop-top", type=float, help=HELP["drop_top"])
    p.add_argument("--rule", choices=["top", "random", "longest", "keep-all"], help=HELP["rule"])
    p.add_argument("--proxy", choices=["keyword-share", "step-ratio"], help=HELP["proxy"])
    p.add_argument("--lexicon", help=HELP["lexicon"])
    p.add_argument("--segmenter", help=HELP["segmenter"])
    p.add_argument("--reference-source", help=HELP["reference_source"])
    p.add_argument("--seed", type=int, help=HELP["seed"])
    p.add_argument("--keep-incorrect", action="store_true", default=None, help=HELP["keep_incorrect"])
    p.add_argument("--delete-steps", type=float, help=HELP["delete_steps"])
    p.add_argument("--verify-timeout", dest="verify_timeout_s", type=float, help=HELP["verify_timeout_s"])
    p.add_argument("--s3-endpoint", help=HELP["s3_endpoint"])
    p.add_argument("--s3-region", help=HELP["s3_region"])
    p.add_argument("--overwrite", action="store_true", default=None, help=HELP["overwrite"])
    p.add_argument("--num-cpus", type=int, help=HELP["num_cpus"])
    p.add_argument("--actors", type=int, help=HELP["actors"])
    p.add_argument("--verify-workers", type=int, help=HELP["verify_workers"])
    p.add_argument("--synthetic", action="store_true", default=None, help=HELP["synthetic"])


def register(sub) -> None:
    p = sub.add_parser("curate", help="curate trajectories (the main job)", description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from raypipe.config import load_config
    from raypipe.pipeline import ConfigMismatch, run_curate
    from raypipe.schema import LayoutError

    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    try:
        config = load_config(args.config, overrides)
    except ValidationError as e:
        print(f"raypipe curate: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    try:
        manifest = run_curate(config)
    except (ConfigMismatch, LayoutError, FileNotFoundError, ValueError) as e:
        print(f"raypipe curate: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a task that failed for good (e.g. an object S3 never served): its root cause, plainly
        print(f"raypipe curate: the job failed: {root_cause(e)}", file=sys.stderr)
        return 1
    return 0 if manifest["balanced"] else 1


def root_cause(e: BaseException) -> str:
    """The last non-Ray exception in the chain (Ray carries remote ones as traceback text), on one line."""
    import re

    texts, seen, x = [], set(), e
    while isinstance(x, BaseException) and id(x) not in seen:
        seen.add(id(x))
        texts.append(str(x))
        x = getattr(x, "cause", None) or x.__cause__
    line = re.compile(r"^([\w.]*(?:Error|Exception)): (.+)$")
    found = [m.groups() for t in texts for ln in t.splitlines() if (m := line.match(ln.strip()))
             and not m.group(1).startswith("ray.")]
    if found:
        return f"{found[-1][0].rsplit('.', 1)[-1]}: {found[-1][1]}"
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0] if first else ''}"


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/curate.py: same flags; joins the cluster it was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/curate.py", __doc__, add_arguments, run, argv)
