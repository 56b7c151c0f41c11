"""An OpenAI-compatible model server over the transformers engine (CPU, small models): /v1/models,
/v1/completions and /v1/chat/completions. Plain logic and a FastAPI app; raypipe.eval.hosting runs it in Ray Serve."""
from __future__ import annotations

import time
import uuid

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from raypipe.eval.hf_engine import HFEngine

MAX_N = 16


class _Sampling(BaseModel):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = None
    stream: bool = False


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)


class OpenAIModelServer:
    def __init__(self, model: str, name: str | None = None, max_tokens_limit: int = 4096, batch_size: int = 8):
        self.engine = HFEngine(model, max_batch=batch_size)
        self.name = name
        self.max_tokens_limit = max_tokens_limit
        self.fingerprint: dict = {}

    def setup(self) -> "OpenAIModelServer":
        from raypipe.eval.stamp import model_fingerprint

        self.engine.setup()
        self.fingerprint = model_fingerprint(self.engine.model_path)
        self.name = self.name or self.engine.model_path.rstrip("/").rsplit("/", 1)[-1]
        return self

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "raypipe",
                                            "root": self.engine.model_path,
                                            "raypipe_sha256": self.fingerprint.get("sha256")}]}

    def _check(self, req: _Sampling) -> int:
        if req.model not in (None, self.name):
            raise HTTPException(404, {"message": f"model '{req.model}' is not served here; this server has "
                                                 f"'{self.name}'", "type": "NotFoundError"})
        if req.stream:
            raise HTTPException(400, {"message": "stream is not supported by this server", "type": "BadRequestError"})
        return min(req.max_tokens or self.max_tokens_limit, self.max_tokens_limit)

    def _run(self, prompts: list[str], req: _Sampling, max_tokens: int) -> tuple[list[dict], dict]:
        expanded = [p for p in prompts for _ in range(req.n)]
        outs = self.engine.generate(expanded, max_tokens, req.temperature, req.top_p, seed=req.seed)
        usage = {"prompt_tokens": sum(o["prompt_tokens"] for o in outs[::req.n]),
                 "completion_tokens": sum(o["completion_tokens"] for o in outs)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return outs, usage

    def completions(self, req: CompletionRequest) -> dict:
        max_tokens = self._check(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        outs, usage = self._run(prompts, req, max_tokens)
        choices = [{"index": i, "text": o["text"], "finish_reason": o["finish_reason"], "logprobs": None}
                   for i, o in enumerate(outs)]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": choices, "usage": usage}

    def chat(self, req: ChatRequest) -> dict:
        max_tokens = self._check(req)
        prompt = self.engine.render([m.model_dump() for m in req.messages])
        outs, usage = self._run([prompt], req, max_tokens)
        choices = [{"index": i, "message": {"role": "assistant", "content": o["text"]},
                    "finish_reason": o["finish_reason"], "logprobs": None} for i, o in enumerate(outs)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": choices, "usage": usage}


def build_app(server: OpenAIModelServer) -> FastAPI:
    """A standalone FastAPI app (uvicorn) around a set-up server."""
    app = FastAPI(title="raypipe model server")
    app.get("/v1/models")(server.models)
    app.post("/v1/completions")(server.completions)
    app.post("/v1/chat/completions")(server.chat)
    app.get("/health")(lambda: {"status": "ok"})
    return app
