"""Sampling parameters and the generation request/result records every backend speaks."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from raypipe.core.schema import stable_hash
from raypipe.core.settings import SettingsGroup, SeedSettings


class GenerationSettings(SettingsGroup):
    """How long and how freely a model writes (evaluation, and the LLM step judge)."""

    temperature: float = Field(0.6, ge=0.0, description="sampling temperature (0: greedy)")
    max_tokens: int = Field(32768, ge=1, description="most new tokens per sample")


class Sampling(GenerationSettings, SeedSettings):
    """The sampling every eval backend speaks."""

    n: int = Field(1, ge=1, description="samples per problem (avg@n, pass@k for k = 1, 2, 4, … n, maj@n)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling")

    def sampling(self) -> "Sampling":
        return Sampling.model_validate({k: getattr(self, k) for k in Sampling.model_fields})


@dataclass
class GenRequest:
    key: str  # "<benchmark>/<problem id>/<sample index>"
    messages: list[dict]
    seed: int  # per sample, derived from the run's seed and the key: the same sample gets the same seed on resume
    problem: str = ""


@dataclass
class GenResult:
    key: str
    text: str = ""
    finish_reason: str | None = None  # stop | length | error
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    seconds: float | None = None


def sample_seed(run_seed: int, key: str) -> int:
    return int(stable_hash(str(run_seed), key, n=4), 16) & 0x7FFFFFFF
