"""raypipe judge: label every reasoning step propose | deduce | verify | other, per source (Ray Data)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="trajectories (file, folder, glob; local or s3://) or a curation output folder")
    p.add_argument("--output", required=True, help="output folder: trajectories/ (Parquet), summary.json, report.html")
    p.add_argument("--backend", choices=["keyword", "openai", "vllm"],
                   help="keyword: offline lexicon baseline (default); openai: any OpenAI-compatible endpoint; vllm: ray.data.llm on GPUs")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="model name at the endpoint (default: the first it lists); for vllm a checkpoint path")
    p.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--lexicon", help="branch-marker lexicon for the keyword judge and branch_ratio (default paper)")
    p.add_argument("--segmenter", help="step separator: blank, line or a regex (default blank)")
    p.add_argument("--steps-per-request", type=int, help="steps labelled per LLM request (default 30)")
    p.add_argument("--max-step-chars", type=int, help="characters of each step shown to the LLM (default 1200)")
    p.add_argument("--max-steps", type=int, help="judge at most the first N steps of a trajectory")
    p.add_argument("--timeout", dest="timeout_s", type=float, help="seconds per HTTP request (default 120)")
    p.add_argument("--max-retries", type=int, help="retries on connection errors, 429 and 5xx (default 2)")
    p.add_argument("--concurrency", type=int, help="requests in flight per actor (default 4)")
    p.add_argument("--max-tokens", type=int, help="answer token limit (default 2048)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--json-mode", action="store_true", default=None, help="send response_format json_object")
    p.add_argument("--limit", type=int, help="only the first N trajectories")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--actors", type=int)
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", help="S3 region")


def register(sub) -> None:
    p = sub.add_parser("judge", help="label reasoning steps (keyword baseline or an LLM judge)", description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from raypipe.diagnostics.judge_job import JudgeConfig, run_judge

    values = {k: v for k, v in vars(args).items() if k not in ("func", "command") and v is not None}
    try:
        config = JudgeConfig(**values)
    except ValidationError as e:
        print(f"raypipe judge: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    try:
        run_judge(config)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        print(f"raypipe judge: {e}", file=sys.stderr)
        return 2
    return 0


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/judge.py: same flags; joins the cluster it was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/judge.py", __doc__, add_arguments, run, argv)
