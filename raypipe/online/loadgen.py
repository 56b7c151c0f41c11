"""Bounded HTTP load against the scoring endpoint, through raypipe.online.client with retries off.

`closed_loop` measures what a server sustains (a few clients, each sending its next request when the last one is
answered); `fixed_rate` is an open loop: POSTs sent on schedule whether or not earlier ones have answered, up to
`max_in_flight` (a request that would exceed it is counted as `skipped`, never silently delayed). Both stop by
themselves. Used by the serving load test and benchmarks/serve_latency.py.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from raypipe.online.client import AsyncScoringClient
from raypipe.core.http import RetryPolicy

NO_RETRIES = RetryPolicy(retries=0)


@dataclass
class LoadResult:
    rate: float
    seconds: float
    sent: int = 0
    skipped: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # transport errors by exception type
    latencies_ms: list[float] = field(default_factory=list)  # of answered requests, from send to full response
    retry_after_missing: int = 0  # 503 answers without a Retry-After header
    max_lateness_ms: float = 0.0  # how far behind schedule the sender fell
    wall_s: float = 0.0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q / 100.0 * len(xs)))]

    def summary(self) -> dict:
        return {"rate": round(self.rate, 1), "seconds": self.seconds, "sent": self.sent, "answered": self.answered,
                "skipped": self.skipped, "statuses": dict(self.statuses), "errors": dict(self.errors),
                "retry_after_missing": self.retry_after_missing,
                "p50_ms": self.percentile(50), "p99_ms": self.percentile(99),
                "max_ms": max(self.latencies_ms) if self.latencies_ms else None,
                "max_lateness_ms": round(self.max_lateness_ms, 1), "wall_s": round(self.wall_s, 2)}


async def _post(client: AsyncScoringClient, path: str, body: bytes, result: LoadResult) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post(path, body)
    except httpx.HTTPError as e:
        result.errors[type(e).__name__] += 1
        return
    result.statuses[r.status_code] += 1
    result.latencies_ms.append(1000.0 * (time.perf_counter() - t0))
    if r.status_code == 503 and "retry-after" not in r.headers:
        result.retry_after_missing += 1


def _split(url: str) -> tuple[str, str]:
    base, _, path = url.rpartition("/v1/")
    return base, "v1/" + path


async def _fixed_rate(url: str, bodies: list[bytes], rate: float, seconds: float, token: str | None,
                      max_in_flight: int, timeout_s: float) -> LoadResult:
    result = LoadResult(rate=rate, seconds=seconds)
    base, path = _split(url)
    n = int(rate * seconds)
    in_flight = 0

    async def one(body: bytes) -> None:
        nonlocal in_flight
        try:
            await _post(client, path, body, result)
        finally:
            in_flight -= 1

    async with AsyncScoringClient(base, token=token, timeout_s=timeout_s, retry=NO_RETRIES,
                                  concurrency=max_in_flight) as client:
        tasks = []
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_lateness_ms = max(result.max_lateness_ms, -1000.0 * delay)
            if in_flight >= max_in_flight:
                result.skipped += 1
                continue
            in_flight += 1
            result.sent += 1
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout_s + 5)
        result.wall_s = time.perf_counter() - start
    return result


def fixed_rate(url: str, bodies: list[bytes], rate: float, seconds: float, token: str | None = None,
               max_in_flight: int = 256, timeout_s: float = 30.0) -> LoadResult:
    """POST bodies (cycled) to url at `rate` per second for `seconds`; returns when every request has ended."""
    return asyncio.run(_fixed_rate(url, bodies, rate, seconds, token, max_in_flight, timeout_s))


async def _closed_loop(url: str, bodies: list[bytes], seconds: float, clients: int, token: str | None,
                       timeout_s: float, max_requests: int | None) -> LoadResult:
    result = LoadResult(rate=0.0, seconds=seconds)
    base, path = _split(url)
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_requests if max_requests is not None else 1 << 62))

    async def loop() -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            result.sent += 1
            await _post(client, path, bodies[i % len(bodies)], result)

    async with AsyncScoringClient(base, token=token, timeout_s=timeout_s, retry=NO_RETRIES,
                                  concurrency=clients) as client:
        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        result.wall_s = time.perf_counter() - start
    result.rate = result.statuses.get(200, 0) / result.wall_s if result.wall_s else 0.0
    return result


def closed_loop(url: str, bodies: list[bytes], seconds: float, clients: int = 4, token: str | None = None,
                timeout_s: float = 30.0, max_requests: int | None = None) -> LoadResult:
    """`clients` loops, each POSTing its next body when the last is answered, for `seconds` (or `max_requests`
    in all). `rate` of the result is the sustained rate of 200 answers: the server's capacity for these bodies."""
    return asyncio.run(_closed_loop(url, bodies, seconds, clients, token, timeout_s, max_requests))
