"""Sampling parameters and the generation request/result records every backend speaks."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from raypipe.core.schema import stable_hash


class Sampling(BaseModel):
    n: int = Field(1, ge=1, description="samples per problem")
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(32768, ge=1)
    seed: int = 0


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
