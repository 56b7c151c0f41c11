"""The eval backend registry and the interface every backend speaks."""
from __future__ import annotations

from typing import TYPE_CHECKING

from raypipe.core.registry import Registry
from raypipe.eval.sampling import GenRequest, GenResult, Sampling

if TYPE_CHECKING:
    from raypipe.eval.config import EvalConfig


class Backend:
    """setup() -> self, generate(requests, sampling) -> results (same order), info() -> stamp entries, close().

    A backend builds itself from the evaluation's settings (`from_config`); its heavy imports (torch, vLLM) happen in
    setup() or later, never when its module is imported."""

    name: str

    @classmethod
    def from_config(cls, config: "EvalConfig") -> "Backend":
        raise NotImplementedError

    def setup(self) -> "Backend":
        return self

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[GenResult]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"backend": self.name}

    def close(self) -> None:
        pass


BACKENDS: Registry[Backend] = Registry("eval backend")
