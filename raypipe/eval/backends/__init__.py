"""Generation backends behind one interface: setup(), generate(requests, sampling) -> results, info(), close().

hf: transformers on this machine; openai: any OpenAI-compatible server; vllm: Ray Data LLM (vLLM engine);
replay: stored responses (outputs generated elsewhere), graded like fresh ones.
"""
from __future__ import annotations

BACKENDS = ("hf", "openai", "vllm", "replay")


def make_backend(config):
    """The backend named by an EvalConfig. Heavy imports happen here, lazily."""
    if config.backend == "hf":
        from raypipe.eval.backends.hf import HFBackend

        return HFBackend(config.model, batch_size=config.batch_size, dtype=config.dtype)
    if config.backend == "openai":
        from raypipe.eval.backends.openai import OpenAIBackend

        return OpenAIBackend(config.model, model_name=config.served_model_name, concurrency=config.concurrency,
                             retries=config.retries, timeout_s=config.request_timeout_s, api_key_env=config.api_key_env)
    if config.backend == "vllm":
        from raypipe.eval.backends.vllm import VLLMBackend

        return VLLMBackend(config.model, tensor_parallel=config.tensor_parallel, replicas=config.replicas,
                           batch_size=config.batch_size, dtype=config.dtype, max_model_len=config.max_model_len,
                           engine_kwargs=config.engine_kwargs)
    if config.backend == "replay":
        from raypipe.eval.backends.replay import ReplayBackend

        return ReplayBackend(config.responses, config.storage())
    raise ValueError(f"unknown backend '{config.backend}'; choose one of {', '.join(BACKENDS)}")
