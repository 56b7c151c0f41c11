"""raypipe eval: evaluate a checkpoint or an OpenAI-compatible server on math benchmarks (avg@n, pass@k, maj@n,
branch statistics of the outputs). `raypipe eval compare RUN_A RUN_B …` prints the side-by-side table."""
from __future__ import annotations

import argparse
import sys

HELP = {
    "model": "checkpoint folder, 'tiny', a hub id, or an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1",
    "benchmarks": "comma-separated: math500, aime24, aime25, beyond_aime, hmmt25, amc23, olympiadbench, minerva, "
                  "olymmath_hard, olymmath_easy (default: the paper's five)",
    "n": "samples per problem (avg@n, pass@k for k = 1, 2, 4, … n, maj@n)",
    "backend": "hf: transformers here; openai: an OpenAI-compatible server at --model; vllm: Ray Data LLM with "
               "vLLM; replay: grade stored --responses",
    "output": "output folder, local or s3://: results.json, report.html, samples/ (resume state)",
    "data_dir": "folder of benchmark files (else $RAYPIPE_DATA_DIR)",
    "benchmark_file": "NAME=PATH: read this benchmark from a local or s3:// file (repeatable)",
    "limit": "evaluate the first N problems of each benchmark",
    "no_size_check": "accept a benchmark file whose problem count differs from the registry's",
    "hub": "load benchmarks without a local file from their Hugging Face dataset id (needs `datasets` and network)",
    "responses": "replay backend: JSONL/Parquet file or folder with problem + response fields (repeatable)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=HELP["model"])
    p.add_argument("--benchmarks", help=HELP["benchmarks"])
    p.add_argument("--n", type=int, help=HELP["n"])
    p.add_argument("--backend", choices=["hf", "openai", "vllm", "replay"], help=HELP["backend"])
    p.add_argument("--output", help=HELP["output"])
    p.add_argument("--config", help="YAML file with any of these options (flags given here win)")
    p.add_argument("--data-dir", help=HELP["data_dir"])
    p.add_argument("--benchmark-file", action="append", metavar="NAME=PATH", help=HELP["benchmark_file"])
    p.add_argument("--limit", type=int, help=HELP["limit"])
    p.add_argument("--no-size-check", dest="size_check", action="store_false", default=None, help=HELP["no_size_check"])
    p.add_argument("--hub", action="store_true", default=None, help=HELP["hub"])
    p.add_argument("--max-tokens", type=int, help="most new tokens per sample")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy); default 0.6")
    p.add_argument("--top-p", type=float, help="nucleus sampling; default 0.95")
    p.add_argument("--seed", type=int, help="run seed; each sample's seed derives from it and the sample's key")
    p.add_argument("--prompt-version", help="prompt template version (v1: problem + 'Please reason step by step…')")
    p.add_argument("--responses", action="append", help=HELP["responses"])
    p.add_argument("--lexicon", help="branch-marker lexicon for the outputs' statistics (paper, switch, FILE.yaml)")
    p.add_argument("--verify-timeout", dest="verify_timeout_s", type=float, help="bound in seconds per comparison")
    p.add_argument("--served-model-name", help="openai: the model name to request (default: the first listed)")
    p.add_argument("--concurrency", type=int, help="openai: requests in flight (default 8)")
    p.add_argument("--retries", type=int, help="openai: retries per request on errors and 429/5xx (default 4)")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float, help="openai: seconds per request")
    p.add_argument("--tensor-parallel", type=int, help="vllm: GPUs per engine replica")
    p.add_argument("--replicas", type=int, help="vllm: engine replicas (data parallel)")
    p.add_argument("--batch-size", type=int, help="hf/vllm: prompts per engine batch")
    p.add_argument("--dtype", help="model dtype (auto, float32, bfloat16, …)")
    p.add_argument("--max-model-len", type=int, help="vllm: context length of the engine")
    p.add_argument("--chunk-size", type=int, help="samples generated and saved together (resume unit)")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", help="S3 region")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an evaluation with other settings")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (vllm backend)")


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on math benchmarks; `eval compare A B` compares runs",
                       description=__doc__)
    p.add_argument("compare", nargs="*", metavar="compare RUN", help="`compare RUN_A RUN_B …`: print the table")
    p.add_argument("--metric", default="avg@n", choices=["avg@n", "pass@1", "maj@n"], help="compare: the metric")
    add_arguments(p)
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    skip = {"func", "command", "config", "compare", "metric", "benchmark_file"}
    out = {k: v for k, v in vars(args).items() if k not in skip}
    if args.benchmark_file:
        pairs = [x.split("=", 1) for x in args.benchmark_file]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("--benchmark-file takes NAME=PATH")
        out["benchmark_files"] = dict(pairs)
    return out


def run_compare(args: argparse.Namespace) -> int:
    from raypipe import io as rio
    from raypipe.eval.results import compare_table, load_results

    storage = rio.Storage(args.s3_endpoint, args.s3_region)
    try:
        runs = [(r.rstrip("/").rsplit("/", 1)[-1], load_results(r, storage)) for r in args.compare[1:]]
    except (FileNotFoundError, ValueError) as e:
        print(f"raypipe eval compare: {e}", file=sys.stderr)
        return 2
    print(compare_table(runs, args.metric))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare:
        if args.compare[0] != "compare" or len(args.compare) < 2:
            print("raypipe eval: the only positional form is `raypipe eval compare RUN_A [RUN_B …]`", file=sys.stderr)
            return 2
        return run_compare(args)
    from pydantic import ValidationError

    from raypipe.eval.benchmarks import BenchmarkError
    from raypipe.eval.config import load_config
    from raypipe.eval.runner import ConfigMismatch, run_eval

    try:
        config = load_config(args.config, _overrides(args))
    except (ValidationError, ValueError) as e:
        print(f"raypipe eval: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    try:
        run_eval(config)
    except (BenchmarkError, ConfigMismatch, FileNotFoundError, ConnectionError) as e:
        print(f"raypipe eval: {e}", file=sys.stderr)
        return 2
    return 0


def job_main(argv: list[str] | None = None) -> int:
    """Entry point of jobs/evaluate.py: same flags; joins the cluster it was submitted to."""
    from raypipe.commands import submitted_job

    return submitted_job("jobs/evaluate.py", __doc__, add_arguments, run, argv, compare=[], metric="avg@n")
