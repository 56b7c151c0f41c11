"""`openai` backend: any OpenAI-compatible server (Ray Serve LLM, vLLM, the CPU deployment), with bounded
concurrency, a timeout on every request and retries with backoff (raypipe.eval.openai_client)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from raypipe.eval.backends.base import BACKENDS, Backend
from raypipe.eval.sampling import GenRequest, GenResult, Sampling


@BACKENDS.register("openai")
class OpenAIBackend(Backend):
    def __init__(self, base_url: str, model_name: str | None = None, concurrency: int = 8, retries: int = 4,
                 timeout_s: float = 600.0, api_key_env: str = "OPENAI_API_KEY"):
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.timeout_s = timeout_s
        self.api_key_env = api_key_env
        self.client = None
        self.models: list[dict] = []

    @classmethod
    def from_config(cls, config) -> "OpenAIBackend":
        return cls(config.model, model_name=config.served_model_name, concurrency=config.concurrency,
                   retries=config.retries, timeout_s=config.request_timeout_s, api_key_env=config.api_key_env)

    def setup(self) -> "OpenAIBackend":
        from raypipe.eval.openai_client import OpenAIClient

        self.client = OpenAIClient(self.base_url, self.api_key_env, self.timeout_s, self.retries,
                                   max_connections=self.concurrency)
        self.models, err = self.client.models()
        if err:
            raise ConnectionError(f"{self.base_url}/models: {err}")
        if not self.model_name:
            if not self.models:
                raise ValueError(f"{self.base_url}/models lists no model; pass --served-model-name")
            self.model_name = self.models[0]["id"]
        return self

    def _one(self, req: GenRequest, sampling: Sampling) -> GenResult:
        body = {"model": self.model_name, "messages": req.messages, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": req.seed, "n": 1}
        t0 = time.perf_counter()
        got, err = self.client.chat(body)
        secs = time.perf_counter() - t0
        if err:
            return GenResult(req.key, finish_reason="error", error=err, seconds=secs)
        try:
            choice = got["choices"][0]
            msg = choice["message"]
            text = msg.get("content") or ""
            # Servers with a reasoning parser return the reasoning apart; put it back in its markup.
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if reasoning:
                text = f"<think>\n{reasoning}\n</think>\n\n{text}"
            usage = got.get("usage") or {}
            return GenResult(req.key, text, choice.get("finish_reason"), usage.get("prompt_tokens"),
                             usage.get("completion_tokens"), seconds=secs)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            return GenResult(req.key, finish_reason="error", error=f"malformed answer ({e!r}): {str(got)[:200]}",
                             seconds=secs)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[GenResult]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))

    def info(self) -> dict:
        entry = next((m for m in self.models if m.get("id") == self.model_name), {})
        return {"backend": self.name, "engine": "openai-compatible server", "url": self.base_url,
                "served_model": self.model_name, "server_model_entry": entry,
                "model": {"path": entry.get("root") or self.model_name, "sha256": entry.get("raypipe_sha256")}}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
