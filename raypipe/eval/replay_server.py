"""An OpenAI-compatible server that replays stored responses, streamed as a model would write them (server-sent
events, a few tokens per event, at a set token rate): a teacher for benchmarks and tests of the generation loop that
costs no GPU. A response is found by the problem text the user turn holds; the k-th request for a problem gets its
k-th stored response (in turn). `/stats` says how many tokens it streamed, and how many requests were stopped by
their client before the end.

    app = replay_app(rows, tokens_per_s=2000)          # rows: {problem, response} (any flat trajectory file's)
    with serve_in_thread(app) as url: ...              # http://127.0.0.1:PORT/v1
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from raypipe.core.structure import BYTES_PER_TOKEN

CHARS_PER_TOKEN = BYTES_PER_TOKEN  # a token of the stream is 4 characters of the stored response


def replay_app(rows: list[dict], tokens_per_s: float = 2000.0, tokens_per_event: int = 4,
               name: str = "replay") -> FastAPI:
    by_problem: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem"].strip()].append(r["response"])
    problems = sorted(by_problem, key=len, reverse=True)  # the longest first: a problem inside another's text
    served: dict[str, int] = defaultdict(int)
    stats = {"requests": 0, "streamed_tokens": 0, "stopped_by_client": 0, "completed": 0}
    lock = threading.Lock()
    app = FastAPI(title="raypipe replay teacher")

    def pick(messages: list[dict]) -> str | None:
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        problem = next((p for p in problems if p in user), None)
        if problem is None:
            return None
        with lock:
            k = served[problem]
            served[problem] += 1
        stored = by_problem[problem]
        return stored[k % len(stored)]

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "raypipe"}]}

    @app.get("/stats")
    def get_stats() -> dict:
        return dict(stats)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        text = pick(body.get("messages") or [])
        if text is None:
            return JSONResponse({"error": {"message": "no stored response for this problem"}}, status_code=404)
        with lock:
            stats["requests"] += 1
        limit = int(body.get("max_tokens") or 10**9) * CHARS_PER_TOKEN
        text, finish = (text, "stop") if len(text) <= limit else (text[:limit], "length")
        prompt_tokens = sum(len(m.get("content") or "") for m in body["messages"]) // CHARS_PER_TOKEN + 1
        completion_tokens = -(-len(text) // CHARS_PER_TOKEN)
        if not body.get("stream"):
            with lock:
                stats["streamed_tokens"] += completion_tokens
                stats["completed"] += 1
            return {"id": "replay", "object": "chat.completion", "model": name, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

        async def events() -> Iterator[str]:
            step = CHARS_PER_TOKEN * tokens_per_event
            t0, sent = time.perf_counter(), 0
            try:
                for start in range(0, len(text), step):
                    piece = text[start:start + step]
                    chunk = {"id": "replay", "object": "chat.completion.chunk", "model": name,
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    sent += -(-len(piece) // CHARS_PER_TOKEN)
                    with lock:
                        stats["streamed_tokens"] += -(-len(piece) // CHARS_PER_TOKEN)
                    ahead = sent / tokens_per_s - (time.perf_counter() - t0)
                    await asyncio.sleep(max(0.0, ahead))
                end = {"id": "replay", "object": "chat.completion.chunk", "model": name,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": sent,
                                 "total_tokens": prompt_tokens + sent}}
                yield f"data: {json.dumps(end)}\n\n"
                yield "data: [DONE]\n\n"
                with lock:
                    stats["completed"] += 1
            except (asyncio.CancelledError, GeneratorExit):  # the client closed the stream: stop writing
                with lock:
                    stats["stopped_by_client"] += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Run `app` with uvicorn in a thread of this process until the block ends; yields its /v1 base URL."""
    import socket

    import uvicorn

    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
