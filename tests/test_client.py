"""The scoring client and the retrying HTTP core against a real HTTP server on 127.0.0.1 that mimics the scorer."""
from __future__ import annotations

import asyncio
import email.utils
import math
import threading
import time
from collections import defaultdict

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import free_port
from raypipe.online.client import AsyncScoringClient, ScoringClient, ScoringError
from raypipe.core.http import RetryPolicy, attempts, delay_for, retry_after_s, send

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret"
TOLERANCE_S = 0.05


def result(item: dict) -> dict:
    if not isinstance(item.get("response"), str):
        return {"id": item.get("id"), "decision": "reject", "reason": "invalid record: no response"}
    return {"id": item.get("id"), "source": item.get("source"), "verdict": "correct", "reason": "fake",
            "decision": "keep" if "keep" in item["response"] else "drop"}


class FakeScorer:
    """The scorer's routes under /{key}/: each test uses its own key, with its own behaviour and records."""

    def __init__(self):
        self.busy: dict[str, tuple[int, str]] = {}  # key -> (first so many /v1/score calls answer 503, Retry-After)
        self.tokens: dict[str, str] = {}  # key -> the bearer token its /v1/* routes require
        self.calls = defaultdict(list)  # key -> time.time() of each /v1/score call
        self.retry_after_sent = defaultdict(list)
        self.batch_sizes = defaultdict(list)
        self.inflight = defaultdict(int)
        self.max_inflight = defaultdict(int)
        self.app = Starlette(routes=[
            Route("/{key}/v1/score", self.score, methods=["POST"]),
            Route("/{key}/v1/score/batch", self.score_batch, methods=["POST"]),
            Route("/{key}/v1/config", self.config),
            Route("/{key}/healthz", lambda request: JSONResponse({"status": "ok"})),
        ])

    def denied(self, key: str, request: Request) -> JSONResponse | None:
        if key in self.tokens and request.headers.get("authorization") != f"Bearer {self.tokens[key]}":
            return JSONResponse({"error": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
        return None

    async def score(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        self.calls[key].append(time.time())
        if (answer := self.denied(key, request)) is not None:
            return answer
        busy, retry_after = self.busy.get(key, (0, ""))
        if len(self.calls[key]) <= busy:
            if retry_after == "date":
                retry_after = email.utils.formatdate(math.ceil(time.time()) + 1, usegmt=True)
            self.retry_after_sent[key].append(retry_after)
            return JSONResponse({"error": "overloaded"}, 503, {"Retry-After": retry_after})
        item = await request.json()
        if not isinstance(item.get("response"), str):
            return JSONResponse({"error": "invalid request: response: Field required", "fields": ["response"]}, 422)
        self.inflight[key] += 1
        self.max_inflight[key] = max(self.max_inflight[key], self.inflight[key])
        try:
            await asyncio.sleep(item.get("delay_s", 0))  # lets requests overlap, and finish out of order
        finally:
            self.inflight[key] -= 1
        return JSONResponse(result(item))

    async def score_batch(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        if (answer := self.denied(key, request)) is not None:
            return answer
        items = (await request.json())["items"]
        self.batch_sizes[key].append(len(items))
        if len(items) > 256:
            return JSONResponse({"error": f"batch of {len(items)} items is over the limit of 256"}, 413)
        results = [result(item) for item in items]
        counts: dict[str, int] = defaultdict(int)
        for r in results:
            counts[r["decision"]] += 1
        return JSONResponse({"results": results, "counts": counts})

    async def config(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        return self.denied(key, request) or JSONResponse({"limits": {"max_batch_items": 256},
                                                          "auth": key in self.tokens})


@pytest.fixture(scope="module")
def server():
    import uvicorn

    fake, port = FakeScorer(), free_port()
    uv = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.02)
    assert uv.started
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    uv.should_exit = True
    thread.join(timeout=10)


def trajectory(i: int = 0, **extra) -> dict:
    return {"id": f"t{i}", "source": "my-model", "problem": "What is 1+1?", "reference_answer": "2",
            "response": f"<think>Perhaps 2.</think> {'keep' if i % 2 == 0 else 'drop'} $\\boxed{{2}}$", **extra}


def test_retry_after_parsing():
    assert retry_after_s("3") == 3.0
    assert retry_after_s("0") == 0.0
    in_2s = email.utils.formatdate(time.time() + 2, usegmt=True)
    assert 0 < retry_after_s(in_2s) < 3
    assert retry_after_s(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    for garbage in ("soon", "", None, "-1", "nan"):
        assert retry_after_s(garbage) is None


def test_delay_for():
    plain = RetryPolicy(jitter=0)
    assert [delay_for(a, None, plain) for a in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert delay_for(1, httpx.Response(503, headers={"Retry-After": "3"}), plain) == 3
    assert delay_for(1, httpx.Response(503, headers={"Retry-After": "600"}), plain) == 60  # capped
    assert delay_for(1, httpx.Response(503, headers={"Retry-After": "soon"}), plain) == 0.5
    ignoring = RetryPolicy(jitter=0, honor_retry_after=False)
    assert delay_for(2, httpx.Response(503, headers={"Retry-After": "3"}), ignoring) == 1
    jittered = [delay_for(1, None, RetryPolicy()) for _ in range(200)]
    assert all(0.5 <= d <= 0.55 for d in jittered) and len(set(jittered)) > 1


def test_sync_client_retries_503_after_retry_after(server):
    server.busy["sync-busy"] = (1, "1")
    with ScoringClient(f"{server.url}/sync-busy") as client:
        assert client.keep(trajectory(0))
    calls = server.calls["sync-busy"]
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 1 - TOLERANCE_S


def test_async_client_retries_503_after_retry_after(server):
    server.busy["async-busy"] = (1, "1")

    async def main():
        async with AsyncScoringClient(f"{server.url}/async-busy") as client:
            return await client.score(trajectory(1))

    assert asyncio.run(main())["decision"] == "drop"
    calls = server.calls["async-busy"]
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 1 - TOLERANCE_S


def test_retry_after_as_http_date(server):
    server.busy["date-busy"] = (1, "date")
    with ScoringClient(f"{server.url}/date-busy") as client:
        assert client.score(trajectory(0))["id"] == "t0"
    calls, (date,) = server.calls["date-busy"], server.retry_after_sent["date-busy"]
    assert len(calls) == 2
    assert calls[1] >= email.utils.parsedate_to_datetime(date).timestamp() - TOLERANCE_S


def test_retries_off_does_not_retry_503(server):
    server.busy["off"] = (1, "1")
    t0 = time.time()
    with ScoringClient(f"{server.url}/off", retry=RetryPolicy(retries=0)) as client:
        with pytest.raises(ScoringError) as err:
            client.score(trajectory(0))
    assert time.time() - t0 < 0.9
    assert len(server.calls["off"]) == 1
    assert (err.value.status, err.value.retry_after, err.value.attempts) == (503, 1.0, 1)
    assert err.value.error == {"error": "overloaded"}


def test_spent_retries_raise_the_last_503(server):
    server.busy["spent"] = (5, "0")
    with ScoringClient(f"{server.url}/spent", retry=RetryPolicy(retries=2)) as client:
        with pytest.raises(ScoringError) as err:
            client.score(trajectory(0))
    assert (err.value.status, err.value.attempts) == (503, 3)
    assert len(server.calls["spent"]) == 3


def test_422_is_never_retried(server):
    with ScoringClient(f"{server.url}/invalid") as client:
        with pytest.raises(ScoringError) as err:
            client.score({"problem": "no response"})
    assert err.value.status == 422 and err.value.error["fields"] == ["response"]
    assert err.value.attempts == 1 and len(server.calls["invalid"]) == 1


def test_bearer_token(server, monkeypatch):
    server.tokens["auth"] = TOKEN
    with ScoringClient(f"{server.url}/auth", token="wrong") as client:
        with pytest.raises(ScoringError) as err:
            client.score(trajectory(0))
    assert err.value.status == 401 and len(server.calls["auth"]) == 1
    monkeypatch.setenv("RAYPIPE_API_TOKEN", TOKEN)
    with ScoringClient(f"{server.url}/auth") as client:
        assert client.score(trajectory(0))["decision"] == "keep"
        assert client.config()["auth"] is True
        assert client.healthz() == {"status": "ok"}


def test_connection_failure_is_retried_then_raised():
    policy = RetryPolicy(retries=2, backoff_s=0.05, jitter=0)
    t0 = time.time()
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        send(client, "GET", f"http://127.0.0.1:{free_port()}/healthz", policy)
    assert time.time() - t0 >= 0.05 + 0.1 - TOLERANCE_S


def test_send_counts_attempts(server):
    server.busy["count"] = (2, "0")
    with httpx.Client() as client:
        r = send(client, "POST", f"{server.url}/count/v1/score", RetryPolicy(jitter=0), json=trajectory(0))
    assert r.status_code == 200 and attempts(r) == 3


def test_score_batch_splits_and_keeps_order(server):
    items = [trajectory(i) for i in range(600)]
    items[7] = {"id": "t7", "problem": "no response"}
    with ScoringClient(f"{server.url}/batch") as client:
        results = client.score_batch(items)
    assert server.batch_sizes["batch"] == [256, 256, 88]
    assert [r["id"] for r in results] == [f"t{i}" for i in range(600)]
    assert results[7]["decision"] == "reject" and results[8]["decision"] == "keep"


def test_async_score_batch_keeps_order(server):
    async def main():
        async with AsyncScoringClient(f"{server.url}/abatch") as client:
            return await client.score_batch([trajectory(i) for i in range(600)], batch_size=100)

    results = asyncio.run(main())
    assert server.batch_sizes["abatch"] == [100] * 6
    assert [r["id"] for r in results] == [f"t{i}" for i in range(600)]


def test_score_many_bounds_concurrency_and_keeps_order(server):
    async def items():
        for i in range(24):
            yield trajectory(i, delay_s=0.02 * (4 - i % 4))  # the first of every four finishes last

    async def main():
        async with AsyncScoringClient(f"{server.url}/many", concurrency=4, max_connections=32) as client:
            return [r async for r in client.score_many(items())]

    results = asyncio.run(main())
    assert [r["id"] for r in results] == [f"t{i}" for i in range(24)]
    assert 2 <= server.max_inflight["many"] <= 4


def test_score_many_errors(server):
    items = [trajectory(i) for i in range(6)]
    items[3] = {"id": "t3", "problem": "no response"}

    async def main(return_exceptions: bool):
        async with AsyncScoringClient(f"{server.url}/many-errors", concurrency=2) as client:
            return [r async for r in client.score_many(items, return_exceptions=return_exceptions)]

    results = asyncio.run(main(True))
    assert isinstance(results[3], ScoringError) and results[3].status == 422
    assert [r["id"] for i, r in enumerate(results) if i != 3] == ["t0", "t1", "t2", "t4", "t5"]
    with pytest.raises(ScoringError):
        asyncio.run(main(False))

    async def pairs():
        async with AsyncScoringClient(f"{server.url}/many-errors", concurrency=2) as client:
            return [p async for p in client.score_many(iter(items), return_exceptions=True, with_items=True)]

    got = asyncio.run(pairs())
    assert [item for item, _ in got] == items  # each result beside the item it scored
    assert all(r["id"] == item["id"] for item, r in got if not isinstance(r, ScoringError))
