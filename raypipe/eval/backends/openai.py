"""`openai` backend: any OpenAI-compatible server (Ray Serve LLM, vLLM, the CPU deployment), with bounded
concurrency, a timeout on every request and retries with backoff."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from raypipe.eval.sampling import GenRequest, GenResult, Sampling

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model_name: str | None = None, concurrency: int = 8, retries: int = 4,
                 timeout_s: float = 600.0, api_key_env: str = "OPENAI_API_KEY"):
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.timeout_s = timeout_s
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.client = None
        self.models: list[dict] = []

    def setup(self) -> "OpenAIBackend":
        import httpx

        self.client = httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=10.0),
                                   headers={"Authorization": f"Bearer {self.api_key}"},
                                   limits=httpx.Limits(max_connections=self.concurrency))
        resp = self._request("GET", "/models")
        if isinstance(resp, str):
            raise ConnectionError(f"{self.base_url}/models: {resp}")
        self.models = resp.get("data") or []
        if not self.model_name:
            if not self.models:
                raise ValueError(f"{self.base_url}/models lists no model; pass --served-model-name")
            self.model_name = self.models[0]["id"]
        return self

    def _request(self, method: str, path: str, body: dict | None = None) -> dict | str:
        """The JSON answer, or the last error as a string once the retries are spent."""
        import httpx

        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                r = self.client.request(method, self.base_url + path, json=body)
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    return f"HTTP 200 with a body that is not JSON: {r.text[:200]}"
            error = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code not in RETRY_STATUS:
                break
        return error

    def _one(self, req: GenRequest, sampling: Sampling) -> GenResult:
        body = {"model": self.model_name, "messages": req.messages, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": req.seed, "n": 1}
        t0 = time.perf_counter()
        got = self._request("POST", "/chat/completions", body)
        secs = time.perf_counter() - t0
        if isinstance(got, str):
            return GenResult(req.key, finish_reason="error", error=got, seconds=secs)
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
        except (KeyError, IndexError, TypeError) as e:
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
