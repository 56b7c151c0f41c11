"""The online scorer as a Ray Serve application: FastAPI routes around raypipe.online.scorer.OnlineScorer.

Concurrent single requests are gathered by `@serve.batch` and scored together; scoring (and the verifier's
bounded worker processes) runs on `scoring_threads` executor threads per replica, never on the event loop.
Auth (401), body limits (413) and admission (503 + Retry-After once a replica holds its limit of requests) are
checked before a body is parsed, so each is cheap and counted. Bodies are read with orjson and results written
without a pydantic round trip; the request and response models stay in the OpenAPI schema.
"""

import asyncio
import hmac
import json
import math
import os
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from ray import serve
from ray.serve import metrics

from raypipe import __version__
from raypipe.core import io
from raypipe.online.config import ServeSettings
from raypipe.online.scorer import OnlineScorer, ScoreResult, Trajectory, invalid_item, load_run, rejected
from raypipe.core.versions import versions as current_versions

TOKEN_ENV = "RAYPIPE_API_TOKEN"
APP_NAME = "raypipe-scorer"
DEPLOYMENT_NAME = "scorer"
ROUTES = ("/v1/score", "/v1/score/batch", "/v1/config", "/healthz", "/openapi.json", "/docs")
SCORING_ROUTES = ("/v1/score", "/v1/score/batch")
REJECTED = (401, 413, 422, 503)
OTHER_SOURCE = "other"  # the decisions metric's source label for sources the manifest does not name
BACKSTOP = 16
QUEUE_DEPTH_PERIOD_S = 1.0


api = FastAPI(title="raypipe scorer", version=__version__, description=(
    "Scores long chain-of-thought trajectories with the curation job's own Scorer and the thresholds of a "
    "curation run: the decision for a row equals the batch job's. Send `Authorization: Bearer <token>` when "
    f"the server has {TOKEN_ENV} set."))

ERRORS = {
    401: {"description": "missing or wrong bearer token"},
    413: {"description": "body (or batch) over the configured limit"},
    422: {"description": "malformed JSON, wrong types, or a record that cannot be normalised"},
    503: {"description": "overloaded: retry after the Retry-After header's seconds"},
}


class BatchRequest(BaseModel):
    items: list[Trajectory] = Field(description="trajectories in the flat form; at most max_batch_items")


class BatchEnvelope(BaseModel):
    """What the batch route validates as a whole: the items are checked one by one (a bad one is a reject)."""

    items: list[Any]


class BatchResponse(BaseModel):
    results: list[ScoreResult] = Field(description="one per item, in order; bad items have decision 'reject'")
    counts: dict[str, int] = Field(description="results per decision")


def _route(scope: dict) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path if path in ROUTES else "other"


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: bearer auth on /v1/*, body limits before parsing, request metrics per route and status."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        rt = Runtime.current
        if scope["type"] != "http" or rt is None:
            return await self.app(scope, receive, send)
        route, t0, status = _route(scope), time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        admitted = False
        try:
            response = self.check_auth(rt, route, scope)
            if response is None and route in SCORING_ROUTES:
                response = rt.admit()
                admitted = response is None
            if response is None:
                response, receive = await self.check_size(rt, route, scope, receive)
            if response is not None:
                return await response(scope, receive, send_status)
            return await self.app(scope, receive, send_status)
        finally:
            if admitted:
                rt.release()
            rt.count(route, status[0], time.perf_counter() - t0)

    @staticmethod
    def check_auth(rt, route: str, scope: dict) -> JSONResponse | None:
        if not rt.token or not route.startswith("/v1/"):
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        if given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), rt.token.encode()):
            return None
        return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    @staticmethod
    async def check_size(rt, route: str, scope: dict, receive):
        limit = rt.settings.max_batch_bytes if route == "/v1/score/batch" else rt.settings.max_item_bytes
        too_big = _error(413, f"request body over the limit of {limit} bytes", limit_bytes=limit)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            return (too_big if not length.isdigit() or int(length) > limit else None), receive
        # No Content-Length (chunked): read at most the limit, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None, receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return too_big, receive
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


api.add_middleware(Guard)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
               for e in exc.errors()]  # the offending input is not echoed back: it can be megabytes
    return _error(422, "invalid request: " + "; ".join(f"{d['field']}: {d['msg']}" for d in details[:5]),
                  fields=[d["field"] for d in details], detail=details)


def _read_json(body: bytes):
    """orjson first; the standard library for what orjson refuses but JSON allows (a lone surrogate escape, which
    the scorer then rejects per item); a 422 naming the body for anything else (not UTF-8, nested too deep)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                           "msg": f"body is not readable JSON: {fast_error}"}]) from None


def _validated(adapter: TypeAdapter, data):
    """The parsed body itself, once it fits the request model: the scorer reads the rows as the batch job does."""
    try:
        adapter.validate_python(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False, include_input=False)]) from None
    return data


_TRAJECTORY, _BATCH = TypeAdapter(Trajectory), TypeAdapter(BatchEnvelope)


def _body(model: type[BaseModel]) -> dict:
    """OpenAPI of a body the route reads itself (see _read_json), so that schema-driven clients still see it."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _openapi() -> dict:
    if api.openapi_schema is None:
        schema = FastAPI.openapi(api)
        _, defs = models_json_schema([(Trajectory, "validation"), (BatchRequest, "validation")],
                                     ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi


def _finite(result: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}


class Runtime:
    """Per-replica state the middleware reads. `current` is set by the replica: one replica per process."""

    current: "Runtime | None" = None

    def __init__(self, settings: ServeSettings, token: str | None, sources: set[str]):
        self.settings = settings
        self.token = token or None
        self.sources = sources
        queued = settings.max_queued_requests
        self.limit = None if queued < 0 else settings.max_ongoing_requests + queued
        self.retry_after = str(max(0, math.ceil(settings.retry_after_s)))
        self.in_flight = 0
        self.requests = metrics.Counter("raypipe_score_requests", "HTTP requests by route and status",
                                        tag_keys=("route", "status"))
        self.rejected = metrics.Counter("raypipe_score_rejected_requests",
                                        "requests refused (401 auth, 413 too large, 422 invalid, 503 overloaded)",
                                        tag_keys=("route", "status"))
        self.latency = metrics.Histogram("raypipe_score_latency_ms", "request latency in the replica (ms)",
                                         boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 30000],
                                         tag_keys=("route",))
        self.queue_depth = metrics.Gauge("raypipe_score_queue_depth",
                                         "scoring requests admitted by the replica and not yet answered")
        self.decisions = metrics.Counter("raypipe_score_decisions",
                                         "scored rows by decision, verdict and source (the manifest's, else 'other')",
                                         tag_keys=("decision", "verdict", "source", "known_source"))
        # Ray exports a gauge only while it is refreshed: sampled every second, off the request path.
        threading.Thread(target=self._sample_queue_depth, name="queue-depth", daemon=True).start()

    def _sample_queue_depth(self) -> None:
        while True:
            self.queue_depth.set(self.in_flight)
            time.sleep(QUEUE_DEPTH_PERIOD_S)

    def admit(self) -> JSONResponse | None:
        """None when the request is admitted (release() it when done), else the 503 that turns it away."""
        if self.limit is not None and self.in_flight >= self.limit:
            return _error(503, f"overloaded: {self.in_flight} requests in this replica; retry after "
                          f"{self.retry_after} s", {"Retry-After": self.retry_after})
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1

    def count(self, route: str, status: int, seconds: float) -> None:
        tags = {"route": route, "status": str(status)}
        self.requests.inc(tags=tags)
        if status in REJECTED:
            self.rejected.inc(tags=tags)
        self.latency.observe(1000.0 * seconds, tags={"route": route})

    def count_decisions(self, results: list[dict]) -> None:
        counts = Counter((r["decision"], str(r.get("verdict")), r.get("source"), str(r.get("known_source")))
                         for r in results)
        for (decision, verdict, source, known), n in counts.items():
            self.decisions.inc(n, tags={"decision": decision, "verdict": verdict, "known_source": known,
                                        "source": source if source in self.sources else OTHER_SOURCE})


def _json(content, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class ScorerService:
    def __init__(self, settings: dict):
        self.settings = ServeSettings(**settings)
        s = self.settings
        self.run = load_run(s.manifest, io.Storage(s.s3_endpoint, s.s3_region), s.verify_workers,
                              s.allow_version_mismatch)
        self.scorers: queue.SimpleQueue[OnlineScorer] = queue.SimpleQueue()  # an OnlineScorer serves one thread
        for _ in range(s.scoring_threads):
            self.scorers.put(OnlineScorer(self.run, s.default_source).setup())
        self.pool = ThreadPoolExecutor(max_workers=s.scoring_threads, thread_name_prefix="scorer")
        self.runtime = Runtime(s, os.environ.get(TOKEN_ENV), set(self.run.policy.thresholds))
        Runtime.current = self.runtime
        self._score_batched.set_max_batch_size(s.batch_size)
        self._score_batched.set_batch_wait_timeout_s(s.batch_wait_s)

    def __del__(self):
        self.pool.shutdown(wait=False)
        while not self.scorers.empty():
            self.scorers.get().close()

    def _score_rows(self, rows: list[dict]) -> list[dict]:
        scorer = self.scorers.get()
        try:
            return scorer.score_rows(rows)
        finally:
            self.scorers.put(scorer)

    async def _score(self, rows: list[dict]) -> list[dict]:
        results = await asyncio.get_running_loop().run_in_executor(self.pool, self._score_rows, rows)
        self.runtime.count_decisions(results)
        return [_finite(r) for r in results]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _score_batched(self, rows: list[dict]) -> list[dict]:
        return await self._score(rows)

    @api.post("/v1/score", response_model=ScoreResult, responses=ERRORS, openapi_extra=_body(Trajectory))
    async def score(self, request: Request):
        """Score one trajectory: verdict, structure metrics, branch_score, the source's threshold, the decision."""
        result = await self._score_batched(_validated(_TRAJECTORY, _read_json(await request.body())))
        if result["decision"] == "reject":
            return _error(422, result["reason"], fields=["body"], detail=[{"field": "body", "msg": result["error"]}])
        return _json(result)

    @api.post("/v1/score/batch", response_model=BatchResponse, responses=ERRORS, openapi_extra=_body(BatchRequest))
    async def score_batch(self, request: Request):
        """Score up to max_batch_items trajectories in one call; a bad item (a missing or mistyped field, a record
        the batch job would reject) is a per-item 'reject' with its reason, and the others are scored."""
        items = _validated(_BATCH, _read_json(await request.body()))["items"]
        n, limit = len(items), self.settings.max_batch_items
        if n > limit:
            raise HTTPException(413, f"batch of {n} items is over the limit of {limit}")
        bad = {i: why for i, item in enumerate(items) if (why := invalid_item(item)) is not None}
        good = [item for i, item in enumerate(items) if i not in bad]
        scored = iter(await self._score(good) if good else [])
        rejects = {i: rejected(why) for i, why in bad.items()}
        self.runtime.count_decisions(list(rejects.values()))
        results = [rejects[i] if i in bad else next(scored) for i in range(n)]
        counts: dict[str, int] = {}
        for r in results:
            counts[r["decision"]] = counts.get(r["decision"], 0) + 1
        return _json({"results": results, "counts": counts})

    @api.get("/v1/config")
    async def config(self) -> dict:
        """The lexicon, proxy, thresholds and versions this replica decides with, and the manifest they came from."""
        s = self.settings
        return {**self.run.describe(), "versions": current_versions(self.run.scoring.lexicon, self.run.scoring.grader),
                "limits": {"max_item_bytes": s.max_item_bytes, "max_batch_items": s.max_batch_items,
                           "max_batch_bytes": s.max_batch_bytes},
                "batching": {"batch_size": s.batch_size, "batch_wait_s": s.batch_wait_s},
                "auth": bool(self.runtime.token), "default_source": s.default_source}

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "manifest": self.run.uri, "config_hash": self.run.config_hash}


def build_app(settings: ServeSettings, api_token: str | None = None):
    """The Serve application. The bearer token defaults to $RAYPIPE_API_TOKEN of the process building the app."""
    from ray.serve.config import BackpressureConfig

    token = api_token if api_token is not None else os.environ.get(TOKEN_ENV)
    actor_options: dict = {"num_cpus": settings.replica_cpus}
    if token:
        actor_options["runtime_env"] = {"env_vars": {TOKEN_ENV: token}}
    # The replica admits requests itself (Runtime.admit: counted, 503 + Retry-After). Serve's own limits must never
    # turn a request away first (it would go uncounted): no queue limit (with direct ingress Serve counts a request
    # as queued until it starts, and a burst would fill a small queue), and concurrency above the replica's limit.
    admitted = settings.max_ongoing_requests + max(0, settings.max_queued_requests)
    return ScorerService.options(
        num_replicas=settings.replicas,
        max_ongoing_requests=admitted + BACKSTOP,
        max_queued_requests=-1,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s),
        ray_actor_options=actor_options,
        logging_config={"enable_access_log": settings.access_log},
    ).bind(json.loads(settings.model_dump_json()))
