"""`hf` backend: transformers generate in this process (CPU, small models)."""
from __future__ import annotations

from raypipe.eval.backends.base import BACKENDS, Backend
from raypipe.eval.hf_engine import HFEngine
from raypipe.eval.sampling import GenRequest, GenResult, Sampling


@BACKENDS.register("hf")
class HFBackend(Backend):
    def __init__(self, model: str, batch_size: int = 8, dtype: str = "float32"):
        self.engine = HFEngine(model, dtype=dtype, max_batch=batch_size)

    @classmethod
    def from_config(cls, config) -> "HFBackend":
        return cls(config.model, batch_size=config.batch_size, dtype=config.dtype)

    def setup(self) -> "HFBackend":
        self.engine.setup()
        return self

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[GenResult]:
        if not requests:
            return []
        prompts = [self.engine.render(r.messages) for r in requests]
        outs = self.engine.generate(prompts, sampling.max_tokens, sampling.temperature, sampling.top_p,
                                    seed=requests[0].seed)
        return [GenResult(r.key, o["text"], o["finish_reason"], o["prompt_tokens"], o["completion_tokens"],
                          seconds=o["seconds"]) for r, o in zip(requests, outs)]

    def info(self) -> dict:
        from raypipe.eval.stamp import model_fingerprint

        return {"backend": self.name, **self.engine.info(), "model": model_fingerprint(self.engine.model_path)}

    def close(self) -> None:
        self.engine.model = None
