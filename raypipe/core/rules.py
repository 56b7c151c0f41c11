"""Selection rules: which verified-correct rows of a source are dropped, as a rank key per row (highest first).

Ties in the key are broken by a stable hash of (source, id) (raypipe.core.policy). Register a new rule with
`@RULES.register("name")`; `--rule name` then selects it in the batch job and the online scorer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from raypipe.core.proxies import as_float
from raypipe.core.registry import Registry
from raypipe.core.schema import hash64

if TYPE_CHECKING:
    from raypipe.core.policy import Policy


class SelectionRule:
    name: ClassVar[str]
    describes: ClassVar[str]  # what the dropped rows are, for the `reason` column
    columns: ClassVar[tuple[str, ...]] = ()  # scored columns `keys` reads beside source and id
    drops: ClassVar[bool] = True  # False: the rule keeps every row (no thresholds)

    def keys(self, table: pa.Table, policy: "Policy", branch_score: np.ndarray) -> np.ndarray:
        raise NotImplementedError


RULES: Registry[SelectionRule] = Registry("selection rule")


@RULES.register("top")
class Top(SelectionRule):
    """Drop the rows with the highest branch_score (the paper's filter)."""

    describes = "highest branch_score"

    def keys(self, table: pa.Table, policy: "Policy", branch_score: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(branch_score), -np.inf, branch_score)


@RULES.register("random")
class Random(SelectionRule):
    """Drop a seeded random sample of the same size (the baseline)."""

    describes = "random pick"

    def keys(self, table: pa.Table, policy: "Policy", branch_score: np.ndarray) -> np.ndarray:
        pairs = zip(table.column("source").to_pylist(), table.column("id").to_pylist())
        seeded = np.fromiter((hash64(str(policy.seed), str(s), str(i)) for s, i in pairs), dtype=np.int64,
                             count=table.num_rows)
        return seeded.astype(np.float64) / float(2**63)


@RULES.register("longest")
class Longest(SelectionRule):
    """Drop the longest rows (estimated tokens): the length-filter baseline."""

    describes = "longest"
    columns = ("n_tokens",)

    def keys(self, table: pa.Table, policy: "Policy", branch_score: np.ndarray) -> np.ndarray:
        return as_float(table, "n_tokens")


@RULES.register("keep-all")
class KeepAll(SelectionRule):
    """Drop nothing (verified-correct rows are all kept)."""

    describes = "none"
    drops = False

    def keys(self, table: pa.Table, policy: "Policy", branch_score: np.ndarray) -> np.ndarray:
        return np.zeros(table.num_rows)
