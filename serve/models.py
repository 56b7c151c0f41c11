"""Model-hosting applications for `serve run` / `serve deploy` (see models.yaml and models-cpu.yaml).

    serve run serve/models-cpu.yaml       # transformers on CPU, OpenAI routes
    serve run serve/models.yaml           # Ray Serve LLM (vLLM) on GPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a working_dir upload


def cpu_app(args: dict):
    """Application builder: args {model, name?, replicas?, num_cpus?, max_tokens_limit?}."""
    from raypipe.eval.hosting import cpu_app as build

    return build(args["model"], args.get("name"), int(args.get("replicas", 1)), float(args.get("num_cpus", 0.5)),
                 int(args.get("max_tokens_limit", 4096)))


def llm_app(args: dict):
    """Application builder: args {model, name?, tensor_parallel?, replicas?, accelerator_type?, engine_kwargs?, cpu?}."""
    from raypipe.eval.hosting import llm_app as build

    return build(args["model"], name=args.get("name"), tensor_parallel=int(args.get("tensor_parallel", 1)),
                 replicas=int(args.get("replicas", 1)), accelerator_type=args.get("accelerator_type"),
                 engine_kwargs=args.get("engine_kwargs"), cpu=bool(args.get("cpu", False)))
