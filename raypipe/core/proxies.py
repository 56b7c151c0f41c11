"""Branch proxies: how branching a trajectory is, as one number per row (`branch_score`; higher = more branching).

A proxy declares the scored columns it reads (phase 2 of the curation job reads exactly those) and may measure
columns of its own (`fields` + `measure`, run by the Scorer beside the structure metrics). Register a new one with
`@PROXIES.register("name")`; `--proxy name` then selects it everywhere (batch job, online scorer, reports).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from pydantic import BaseModel, Field

from raypipe.core.registry import Registry, registered
from raypipe.core.settings import SettingsGroup

if TYPE_CHECKING:
    from raypipe.core.policy import Policy


def as_float(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


class BranchProxy:
    """One way to score branching. Subclasses set `columns` and implement `scores`."""

    name: ClassVar[str]
    label: ClassVar[str] = "branch_score"  # what the score measures, for reasons and reports
    columns: ClassVar[tuple[str, ...]] = ()  # scored columns `scores` reads
    fields: ClassVar[list[tuple[str, pa.DataType]]] = []  # columns this proxy measures itself
    needs_reference: ClassVar[bool] = False  # scores against a reference source (policy.reference_steps)

    def measure(self, records: pa.Table, structure: dict[str, pa.Array]) -> dict[str, pa.Array]:
        """The proxy's own columns for a batch of records (and the structure metrics already measured)."""
        return {}

    def scores(self, table: pa.Table, policy: "Policy") -> np.ndarray:
        raise NotImplementedError


PROXIES: Registry[BranchProxy] = Registry("branch proxy")


def step_ratio(table: pa.Table, policy: "Policy") -> np.ndarray:
    """Steps of each row / mean steps of the reference source on the same problem (NaN where there is none)."""
    n_steps = as_float(table, "n_steps")
    if not policy.reference_steps:
        return np.full(len(n_steps), np.nan)
    ref = np.array([policy.reference_steps.get(p, np.nan) for p in table.column("problem_id").to_pylist()],
                   dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref > 0, n_steps / ref, np.nan)


@PROXIES.register("keyword-share")
class KeywordShare(BranchProxy):
    """branch_ratio: the share of reasoning steps that hold a lexicon marker (the paper's keyword proxy)."""

    label = "branch_ratio"
    columns = ("branch_ratio",)

    def scores(self, table: pa.Table, policy: "Policy") -> np.ndarray:
        return as_float(table, "branch_ratio")


@PROXIES.register("step-ratio")
class StepRatio(BranchProxy):
    """step_ratio: steps / the reference source's steps on the same problem (the paper's second proxy)."""

    label = "step_ratio"
    columns = ("problem_id", "n_steps")
    needs_reference = True

    def scores(self, table: pa.Table, policy: "Policy") -> np.ndarray:
        return step_ratio(table, policy)


@PROXIES.register("markers-per-1k")
class MarkersPer1k(BranchProxy):
    """markers_per_1k_tokens: lexicon markers per 1,000 reasoning tokens (density, not the share of steps)."""

    label = "markers_per_1k_tokens"
    columns = ("markers_per_1k_tokens",)

    def scores(self, table: pa.Table, policy: "Policy") -> np.ndarray:
        return as_float(table, "markers_per_1k_tokens")


class ProxySettings(SettingsGroup):
    proxy: registered(PROXIES) = Field("keyword-share", description="branch_score: keyword-share (branch_ratio), "
                                       "step-ratio (steps / the reference source's), markers-per-1k")
