"""Client of the online scoring endpoint (`raypipe serve`): keep or drop each trajectory as it is generated.

    from raypipe.online.client import ScoringClient

    with ScoringClient("http://127.0.0.1:8000") as scorer:   # bearer token: $RAYPIPE_API_TOKEN
        for problem, answer, text in generate():             # vLLM, an API client, ...
            row = {"source": "my-model", "problem": problem, "reference_answer": answer, "response": text}
            if scorer.keep(row):
                out.write(json.dumps(row) + "\\n")

`AsyncScoringClient` has the same methods (awaited) and `score_many`, which scores a stream (say, a JSONL file's
rows) with at most `concurrency` requests in flight and yields the results in input order.

Requests are retried per a `raypipe.core.http.RetryPolicy`, an overloaded server's 503 + Retry-After included. An
error status left after that raises `ScoringError`; a connection failure left after that raises httpx's error.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import httpx

from raypipe import __version__
from raypipe.core.http import RetryPolicy, asend, attempts, retry_after_s, send

try:
    import orjson

    _dumps, _loads = orjson.dumps, orjson.loads
except ImportError:
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    _loads = json.loads

TOKEN_ENV = "RAYPIPE_API_TOKEN"  # as raypipe.online.app, which imports Ray
MAX_BATCH_ITEMS = 256  # the server's default max_batch_items


class ScoringError(Exception):
    """An error answer from the scorer: `status`, the server's JSON `error` body (or its text), the response's
    `retry_after` seconds (None without the header) and how many `attempts` were made."""

    def __init__(self, status: int, error: Any, retry_after: float | None = None, attempts: int = 1):
        message = error.get("error", error) if isinstance(error, dict) else error
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.error, self.retry_after, self.attempts = status, error, retry_after, attempts


def _decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response; ScoringError for any other status or a body that is not JSON."""
    retry_after = retry_after_s(response.headers.get("retry-after"))
    try:
        body = _loads(response.content)
    except ValueError:
        body = response.text[:1000]
        if response.is_success:
            raise ScoringError(response.status_code, f"response is not JSON: {body[:300]!r}", retry_after,
                               attempts(response)) from None
    if response.is_success:
        return body
    raise ScoringError(response.status_code, body, retry_after, attempts(response))


def _chunks(items: list[dict], size: int) -> list[list[dict]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    return [items[i:i + size] for i in range(0, len(items), size)]


def _httpx_args(base_url: str, token: str | None, timeout_s: float, max_connections: int) -> dict:
    """The arguments of both clients' httpx client: headers, timeout, a keep-alive pool."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    headers = {"content-type": "application/json", "accept": "application/json",
               "user-agent": f"raypipe/{__version__}"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return {"base_url": base_url.rstrip("/") + "/",  # keeps a route prefix: /prefix/ + v1/score
            "headers": headers,
            "timeout": httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            "limits": httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)}


class ScoringClient:
    """Blocking client over one keep-alive connection pool of `max_connections`."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, max_connections: int = 8):
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(**_httpx_args(base_url, token, timeout_s, max_connections))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        content = _dumps(body) if body is not None else None
        return _decode(send(self.http, method, path, self.retry, content=content))

    def score(self, trajectory: dict) -> dict:
        """The result of one trajectory (`decision` keep | drop, `reason`, `verdict`, ...); 422 for a reject."""
        return self._call("POST", "v1/score", trajectory)

    def score_batch(self, items: list[dict], batch_size: int = MAX_BATCH_ITEMS) -> list[dict]:
        """One result per item, in order, in requests of at most `batch_size`; a bad item is a `reject` result."""
        return [r for chunk in _chunks(items, batch_size)
                for r in self._call("POST", "v1/score/batch", {"items": chunk})["results"]]

    def keep(self, trajectory: dict) -> bool:
        return self.score(trajectory)["decision"] == "keep"

    def healthz(self) -> dict:
        return self._call("GET", "healthz")

    def config(self) -> dict:
        """The lexicon, thresholds, limits and versions the server decides with."""
        return self._call("GET", "v1/config")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def _aiter(items: Iterable[dict] | AsyncIterable[dict]) -> AsyncIterator[dict]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class AsyncScoringClient:
    """Asyncio client: at most `concurrency` requests in flight, over a pool of `max_connections` (default: as many)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, concurrency: int = 16, max_connections: int | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.retry, self.concurrency = retry or RetryPolicy(), concurrency
        self.http = httpx.AsyncClient(**_httpx_args(base_url, token, timeout_s, max_connections or concurrency))
        self.slots = asyncio.Semaphore(concurrency)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        content = _dumps(body) if body is not None else None
        async with self.slots:  # held through the retries' waits too: an overloaded server gets no more requests
            response = await asend(self.http, method, path, self.retry, content=content)
        return _decode(response)

    async def score(self, trajectory: dict) -> dict:
        """The result of one trajectory (`decision` keep | drop, `reason`, `verdict`, ...); 422 for a reject."""
        return await self._call("POST", "v1/score", trajectory)

    async def post(self, path: str, content: bytes) -> httpx.Response:
        """POST an encoded body to `path` (e.g. "v1/score") and return the response as it is, whatever its status
        (retried per the policy): for load generators, which count statuses themselves."""
        async with self.slots:
            return await asend(self.http, "POST", path, self.retry, content=content)

    async def score_batch(self, items: list[dict], batch_size: int = MAX_BATCH_ITEMS) -> list[dict]:
        """One result per item, in order; the requests of at most `batch_size` items are sent concurrently."""
        answers = await asyncio.gather(*(self._call("POST", "v1/score/batch", {"items": chunk})
                                         for chunk in _chunks(items, batch_size)))
        return [r for answer in answers for r in answer["results"]]

    async def score_many(self, items: Iterable[dict] | AsyncIterable[dict], return_exceptions: bool = False,
                         with_items: bool = False) -> AsyncIterator:
        """Score each item with its own request, concurrently, and yield the results in input order.

        The input is read only a little ahead of the results (2 x `concurrency` items), so a long stream is never
        held in memory. With `return_exceptions`, an item's ScoringError (a 422 reject, say) is yielded in its place
        instead of raised; with `with_items`, each result comes as an (item, result) pair.
        """
        pending: deque[tuple[dict, asyncio.Task]] = deque()

        async def next_result():
            item, task = pending.popleft()
            try:
                result = await task
            except ScoringError as e:
                if not return_exceptions:
                    raise
                result = e
            return (item, result) if with_items else result

        try:
            async for item in _aiter(items):
                pending.append((item, asyncio.create_task(self.score(item))))
                if len(pending) >= 2 * self.concurrency:
                    yield await next_result()
            while pending:
                yield await next_result()
        finally:
            for _, task in pending:
                task.cancel()
            await asyncio.gather(*(task for _, task in pending), return_exceptions=True)

    async def keep(self, trajectory: dict) -> bool:
        return (await self.score(trajectory))["decision"] == "keep"

    async def healthz(self) -> dict:
        return await self._call("GET", "healthz")

    async def config(self) -> dict:
        """The lexicon, thresholds, limits and versions the server decides with."""
        return await self._call("GET", "v1/config")

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncScoringClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
