"""The retrying HTTP core of raypipe's clients: one policy for sync and async httpx clients, Retry-After honoured.

`send` / `asend` send one request (any method; `json=`, `content=`, `timeout=`, ... go to httpx as they are) and
retry it on transport errors and on the policy's statuses. They return the last response, also when the retries
end on a retryable status; they raise the last `httpx.TransportError` only when no response ever came. The
response gets an `attempts` attribute: how many requests were sent in all (read it with `attempts(response)`).
"""
from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from datetime import datetime, timezone

import httpx
from pydantic import BaseModel, ConfigDict, Field

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class RetryPolicy(BaseModel):
    """When and how long to wait before sending a request again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(4, ge=0, description="requests sent again after the first one; 0: no retries")
    backoff_s: float = Field(0.5, ge=0, description="wait before the first retry; doubled for each next one")
    max_backoff_s: float = Field(8.0, ge=0, description="longest wait of the exponential backoff")
    retry_statuses: frozenset[int] = Field(RETRY_STATUSES, description="HTTP statuses that are retried")
    honor_retry_after: bool = Field(True, description="wait what a response's Retry-After header asks, not the backoff")
    max_retry_after_s: float = Field(60.0, ge=0, description="longest Retry-After waited; a longer one is cut to this")
    jitter: float = Field(0.1, ge=0, le=1, description="each wait is lengthened by a random fraction up to this")


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait: delta-seconds or an HTTP date (0 when past); None if unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def delay_for(attempt: int, response: httpx.Response | None, policy: RetryPolicy) -> float:
    """Seconds to wait after the `attempt`-th request (1-based) failed with `response` (None: a transport error)."""
    asked = retry_after_s(response.headers.get("retry-after")) if response is not None else None
    if asked is not None and policy.honor_retry_after:
        base, cap = asked, policy.max_retry_after_s
    else:
        base, cap = policy.backoff_s * 2 ** (attempt - 1), policy.max_backoff_s
    return min(base * (1 + random.uniform(0, policy.jitter)), cap)


def attempts(response: httpx.Response) -> int:
    """How many requests `send` / `asend` sent to get this response (1 for a response they did not return)."""
    return getattr(response, "attempts", 1)


def retry_wait(policy: RetryPolicy, attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds before the next attempt, or None when this outcome is final."""
    if attempt > policy.retries or (response is not None and response.status_code not in policy.retry_statuses):
        return None
    return delay_for(attempt, response, policy)


def send(client: httpx.Client, method: str, url: str, policy: RetryPolicy | None = None, **kw) -> httpx.Response:
    """`client.request(method, url, **kw)`, retried per `policy` (None: the default policy)."""
    policy = policy or RetryPolicy()
    received = None
    attempt = 0
    while True:
        attempt += 1
        try:
            response = received = client.request(method, url, **kw)
        except httpx.TransportError:
            if received is None and attempt > policy.retries:
                raise
            response = None
        wait = retry_wait(policy, attempt, response)
        if wait is None:
            received.attempts = attempt
            return received
        time.sleep(wait)


async def asend(client: httpx.AsyncClient, method: str, url: str, policy: RetryPolicy | None = None,
                **kw) -> httpx.Response:
    """`await client.request(method, url, **kw)`, retried per `policy` (None: the default policy)."""
    policy = policy or RetryPolicy()
    received = None
    attempt = 0
    while True:
        attempt += 1
        try:
            response = received = await client.request(method, url, **kw)
        except httpx.TransportError:
            if received is None and attempt > policy.retries:
                raise
            response = None
        wait = retry_wait(policy, attempt, response)
        if wait is None:
            received.attempts = attempt
            return received
        await asyncio.sleep(wait)
