"""The one client of OpenAI-compatible servers (the eval `openai` backend and the LLM step judge): JSON over
httpx on raypipe.core.http's retrying core (transport errors, 408/409/429/5xx; Retry-After honoured).

Errors come back as strings, never as exceptions, so a failed request costs one sample or one judged chunk."""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Iterator

from pydantic import AliasChoices, Field

from raypipe.core.http import RetryPolicy, retry_wait, send
from raypipe.core.settings import SettingsGroup


class ClientSettings(SettingsGroup):
    """How the client talks to an OpenAI-compatible server."""

    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(8, ge=1, description="requests in flight")
    retries: int = Field(4, ge=0, description="retries per request on connection errors, 429 and 5xx (Retry-After "
                         "honoured)", validation_alias=AliasChoices("retries", "max_retries"))
    request_timeout_s: float = Field(600.0, gt=0, description="seconds per request", validation_alias=AliasChoices(
        "request_timeout_s", "request_timeout", "timeout_s", "timeout"))

    def client(self, base_url: str, **kwargs) -> "OpenAIClient":
        return OpenAIClient(base_url, self.api_key_env, self.request_timeout_s, self.retries, **kwargs)


class OpenAIClient:
    def __init__(self, base_url: str, api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 600.0,
                 retries: int = 4, max_connections: int | None = None):
        import httpx

        self.base_url = base_url.rstrip("/")
        key = (os.environ.get(api_key_env) if api_key_env else None) or "EMPTY"
        self.policy = RetryPolicy(retries=max(0, retries))
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
                                 headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=max_connections or 100))

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[dict | None, str | None]:
        """(the JSON answer, None), or (None, the last error) once the retries are spent."""
        import httpx

        try:
            r = send(self.http, method, self.base_url + path, self.policy,
                     **({"json": body} if body is not None else {}))
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {str(e)[:300]}"
        if not r.is_success:
            return None, f"HTTP {r.status_code}: {r.text[:300]}"
        try:
            return r.json(), None
        except ValueError:
            return None, f"HTTP {r.status_code} with a body that is not JSON: {r.text[:200]!r}"

    def models(self) -> tuple[list[dict], str | None]:
        """The served models (GET /models), or ([], the error)."""
        data, err = self.request("GET", "/models")
        if err:
            return [], err
        models = (data.get("data") or []) if isinstance(data, dict) else None
        return (models, None) if isinstance(models, list) else ([], f"no model list in {str(data)[:200]}")

    def chat(self, body: dict) -> tuple[dict | None, str | None]:
        """POST /chat/completions: (the answer, None) or (None, the error)."""
        return self.request("POST", "/chat/completions", body)

    def stream_chat(self, body: dict, on_delta: Callable[[str, str], bool],
                    on_restart: Callable[[], None] | None = None) -> tuple[dict | None, str | None]:
        """POST /chat/completions with `stream: true` (server-sent events). Every delta goes to
        `on_delta(content, reasoning_content)`; when it returns False the stream is closed there, which tells the
        server to stop generating (vLLM and Serve LLM abort the request). A connection lost or a retryable status
        is tried again from the start (`on_restart` first), per the retry policy.

        Returns ({text, reasoning, finish_reason, usage, aborted, attempts}, None) or (None, the last error)."""
        import httpx

        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        attempt = 0
        while True:
            attempt += 1
            text, reasoning, finish, usage, aborted, error, response = [], [], None, None, False, None, None
            try:
                with self.http.stream("POST", self.base_url + "/chat/completions", json=body) as r:
                    response = r
                    if not r.is_success:
                        error = f"HTTP {r.status_code}: {r.read().decode(errors='replace')[:300]}"
                    else:
                        for event in _events(r.iter_lines()):
                            if event.get("usage"):
                                usage = event["usage"]
                            for choice in event.get("choices") or []:
                                delta = choice.get("delta") or {}
                                content = delta.get("content") or ""
                                thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
                                text.append(content), reasoning.append(thought)
                                finish = choice.get("finish_reason") or finish
                                if (content or thought) and not on_delta(content, thought):
                                    aborted = True
                                    break
                            if aborted:
                                break
            except httpx.HTTPError as e:
                error, response = f"{type(e).__name__}: {str(e)[:300]}", None
            if error is None:
                return {"text": "".join(text), "reasoning": "".join(reasoning) or None, "aborted": aborted,
                        "finish_reason": "abort" if aborted else finish, "usage": usage, "attempts": attempt}, None
            wait = retry_wait(self.policy, attempt, response)
            if wait is None:
                return None, error
            if on_restart is not None:
                on_restart()
            time.sleep(wait)

    def close(self) -> None:
        self.http.close()


def _events(lines) -> Iterator[dict]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            continue

