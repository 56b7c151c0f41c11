"""Model-hosting applications for `serve run` / `serve deploy` (see models.yaml and models-cpu.yaml).

    serve run serve/models-cpu.yaml       # transformers on CPU, OpenAI routes
    serve run serve/models.yaml           # Ray Serve LLM (vLLM) on GPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a working_dir upload


def cpu_app(args: dict):
    """Application builder: args are raypipe.eval.config.HostingSettings (model, served_model_name, replicas,
    replica_cpus, max_tokens_limit; `name` and `num_cpus` as before)."""
    from raypipe.eval.config import HostingSettings

    return HostingSettings.model_validate({**args, "engine": "cpu"}).app()


def llm_app(args: dict):
    """Application builder: args are raypipe.eval.config.HostingSettings (model, served_model_name, tensor_parallel,
    replicas, accelerator_type, engine_kwargs, cpu)."""
    from raypipe.eval.config import HostingSettings

    return HostingSettings.model_validate({**args, "engine": "vllm"}).app()
