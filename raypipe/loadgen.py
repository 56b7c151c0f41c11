"""A bounded open-loop HTTP load generator: POSTs at a fixed rate for a fixed time, then stops by itself.

Used by the serving load test and benchmarks/serve_latency.py. Requests are sent on schedule whether or not
earlier ones have answered (open loop), up to `max_in_flight`; a request that would exceed it is counted as
`skipped`, never silently delayed.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    rate: float
    seconds: float
    sent: int = 0
    skipped: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # transport errors by exception type
    latencies_ms: list[float] = field(default_factory=list)  # of answered requests, from send to full response
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
        return {"rate": self.rate, "seconds": self.seconds, "sent": self.sent, "answered": self.answered,
                "skipped": self.skipped, "statuses": dict(self.statuses), "errors": dict(self.errors),
                "p50_ms": self.percentile(50), "p99_ms": self.percentile(99),
                "max_ms": max(self.latencies_ms) if self.latencies_ms else None,
                "max_lateness_ms": round(self.max_lateness_ms, 1), "wall_s": round(self.wall_s, 2)}


async def _fixed_rate(url: str, bodies: list[bytes], rate: float, seconds: float, headers: dict,
                      max_in_flight: int, timeout_s: float) -> LoadResult:
    import httpx

    result = LoadResult(rate=rate, seconds=seconds)
    headers = {"content-type": "application/json", **headers}
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    in_flight = 0

    async def one(client, body: bytes) -> None:
        nonlocal in_flight
        t0 = time.perf_counter()
        try:
            r = await client.post(url, content=body, headers=headers)
            result.statuses[r.status_code] += 1
            result.latencies_ms.append(1000.0 * (time.perf_counter() - t0))
        except httpx.HTTPError as e:
            result.errors[type(e).__name__] += 1
        finally:
            in_flight -= 1

    n = int(rate * seconds)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        tasks = []
        start = time.perf_counter()
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_lateness_ms = max(result.max_lateness_ms, -1000.0 * delay)
            if in_flight >= max_in_flight:
                result.skipped += 1
                continue
            in_flight += 1
            result.sent += 1
            tasks.append(asyncio.create_task(one(client, bodies[i % len(bodies)])))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout_s + 5)
        result.wall_s = time.perf_counter() - start
    return result


def fixed_rate(url: str, bodies: list[bytes], rate: float, seconds: float, headers: dict | None = None,
               max_in_flight: int = 256, timeout_s: float = 30.0) -> LoadResult:
    """POST bodies (cycled) to url at `rate` per second for `seconds`; returns when every request has ended."""
    return asyncio.run(_fixed_rate(url, bodies, rate, seconds, headers or {}, max_in_flight, timeout_s))
