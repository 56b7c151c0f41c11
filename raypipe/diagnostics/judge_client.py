"""A bounded client for any OpenAI-compatible chat endpoint: timeouts, a few retries, never an exception."""
from __future__ import annotations

import os
import time


class ChatClient:
    def __init__(self, base_url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 2, max_tokens: int = 2048, temperature: float = 0.0,
                 json_mode: bool = False):
        import httpx

        self.url = base_url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers=headers)
        self.model, self.max_retries = model, max_retries
        self.max_tokens, self.temperature, self.json_mode = max_tokens, temperature, json_mode

    def _post(self, path: str, body: dict | None) -> tuple[dict | None, str | None]:
        import httpx

        error = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                r = self.http.post(self.url + path, json=body) if body is not None else self.http.get(self.url + path)
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {str(e)[:200]}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                error = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                return None, f"HTTP {r.status_code}: {r.text[:200]}"
            try:
                return r.json(), None
            except ValueError:
                return None, f"response is not JSON: {r.text[:200]!r}"
        return None, error

    def resolve_model(self) -> str | None:
        """The configured model, else the first one the endpoint lists."""
        if self.model:
            return self.model
        data, err = self._post("/models", None)
        try:
            self.model = data["data"][0]["id"]
        except (TypeError, KeyError, IndexError):
            raise RuntimeError(f"cannot list models at {self.url}: {err or data}") from None
        return self.model

    def chat(self, messages: list[dict]) -> tuple[str | None, str | None]:
        """(answer text, error): exactly one of them is set."""
        body = {"model": self.resolve_model(), "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        data, err = self._post("/chat/completions", body)
        if err:
            return None, err
        try:
            text = data["choices"][0]["message"]["content"]
        except (TypeError, KeyError, IndexError):
            return None, f"unexpected response shape: {str(data)[:200]}"
        return (text, None) if isinstance(text, str) else (None, "answer has no text content")

    def close(self) -> None:
        self.http.close()
