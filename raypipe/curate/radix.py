"""Exact per-source thresholds without the rows in one place: a radix select on the 128-bit rank key.

A row's rank key is (primary, tie-break hash), dropped highest first (raypipe.core.policy). Both halves are mapped
to order-preserving uint64s (`k1`, `k2`): descending (k1, k2) is exactly the order `np.lexsort((-t, -p))` gives
(NaN primaries lowest, -0.0 equal to 0.0), and rows equal on both halves keep their position order (`pos`).

The select runs in passes over per-chunk key tables. Each pass counts, per target (a source's k-th row, or the
global default threshold's row), the next 16-bit digit of the rows that still match the target's prefix; the
target then narrows to the digit holding its row. When that bucket holds at most `bucket_limit` rows (or all 128
bits are fixed) its rows are fetched and the target is resolved exactly. What the driver holds is O(targets x
65536) counts and O(targets x bucket_limit) fetched keys, never O(rows). Heavy ties on the primary (millions of
rows at branch_ratio = 0) are split by the tie-break bits.

Pure numpy/pyarrow: `thresholds_from_tables` runs everything in-process over an iterable of key tables; the Ray
layer (raypipe.curate.phase2) runs the same per-chunk functions as tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core.policy import Policy, Threshold, branch_scores, n_to_drop, rank_keys
from raypipe.core.rules import RULES
from raypipe.core.verify import CORRECT

BITS = 16
NBINS = 1 << BITS
LEVELS = 128 // BITS
SIGN = np.uint64(1 << 63)
KEY_SCHEMA = pa.schema([("source", pa.string()), ("k1", pa.uint64()), ("k2", pa.uint64()), ("p", pa.float64()),
                        ("pos", pa.int64())])
# Level-0 digits of k1 that hold only non-finite primaries: NaN (all mapped to 0), -inf and +inf.
NON_FINITE_DIGITS = (0x0000, 0x000F, 0xFFF0)


def encode_primary(p: np.ndarray) -> np.ndarray:
    """float64 -> uint64, ascending as the float (-0.0 as 0.0), every NaN below -inf."""
    p = np.where(p == 0.0, 0.0, np.asarray(p, dtype=np.float64))  # -0.0 -> 0.0
    bits = p.view(np.uint64)
    k = np.where(bits & SIGN, ~bits, bits | SIGN)
    k[np.isnan(p)] = 0
    return k


def encode_tiebreak(t: np.ndarray) -> np.ndarray:
    return np.asarray(t, dtype=np.int64).view(np.uint64) ^ SIGN


def key_table(ranked: pa.Table, policy: Policy, pos_base: int = 0) -> pa.Table:
    """The rank keys of the verified-correct rows of a chunk (duplicates already removed), in KEY_SCHEMA."""
    score, _ = branch_scores(ranked, policy)
    primary, tb = rank_keys(ranked, policy, score)
    correct = pc.fill_null(pc.equal(ranked.column("verdict"), CORRECT), False).to_numpy(zero_copy_only=False)
    idx = np.nonzero(correct)[0]
    return pa.Table.from_arrays(
        [ranked.column("source").take(pa.array(idx)).combine_chunks().cast(pa.string()),
         pa.array(encode_primary(primary[idx]), pa.uint64()), pa.array(encode_tiebreak(tb[idx]), pa.uint64()),
         pa.array(primary[idx], pa.float64()), pa.array(pos_base + idx, pa.int64())], schema=KEY_SCHEMA)


@dataclass
class Group:
    """Rows of `sources` whose first `level` digits of (k1, k2) equal the prefix (hi, lo)."""

    gid: str
    sources: tuple[str, ...]
    level: int = 0
    hi: int = 0
    lo: int = 0


def _mask(keys: pa.Table, g: Group) -> np.ndarray:
    m = pc.is_in(keys.column("source"), value_set=pa.array(g.sources, pa.string())).to_numpy(zero_copy_only=False)
    if g.level == 0:
        return m
    k1 = keys.column("k1").to_numpy()
    if g.level <= 4:
        shift = np.uint64(64 - BITS * g.level)
        return m & ((k1 >> shift) == np.uint64(g.hi >> int(shift))) if g.level < 4 else m & (k1 == np.uint64(g.hi))
    shift = np.uint64(64 - BITS * (g.level - 4))
    k2 = keys.column("k2").to_numpy()
    same = (k2 >> shift) == np.uint64(g.lo >> int(shift)) if g.level < 8 else k2 == np.uint64(g.lo)
    return m & (k1 == np.uint64(g.hi)) & same


def _digit(keys: pa.Table, idx: np.ndarray, level: int) -> np.ndarray:
    col, lv = ("k1", level) if level < 4 else ("k2", level - 4)
    v = keys.column(col).to_numpy()[idx]
    return ((v >> np.uint64(64 - BITS * (lv + 1))) & np.uint64(NBINS - 1)).astype(np.int64)


def count_chunk(keys: pa.Table, groups: list[Group] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{gid: (digits, counts)} of the next digit of each group's rows; groups=None: level 0 per source."""
    if groups is None:
        groups = [Group(s, (s,)) for s in pc.unique(keys.column("source")).to_pylist()]
    out = {}
    for g in groups:
        idx = np.nonzero(_mask(keys, g))[0]
        if len(idx):
            out[g.gid] = np.unique(_digit(keys, idx, g.level), return_counts=True)
    return out


def fetch_chunk(keys: pa.Table, groups: list[Group]) -> dict[str, pa.Table]:
    """{gid: the group's rows (k1, k2, p, pos)}: only for groups already narrowed to a small bucket."""
    out = {}
    for g in groups:
        idx = np.nonzero(_mask(keys, g))[0]
        if len(idx):
            out[g.gid] = keys.take(pa.array(idx)).select(["k1", "k2", "p", "pos"])
    return out


def add_counts(total: dict[str, np.ndarray], part: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for gid, (digits, counts) in part.items():
        hist = total.setdefault(gid, np.zeros(NBINS, dtype=np.int64))
        np.add.at(hist, digits, counts)


@dataclass
class Target:
    group: Group
    rank: int  # descending rank of the wanted row among the group's rows under the prefix
    size: int  # rows under the prefix
    n_correct: int = 0
    n_drop: int = 0
    found: dict = field(default_factory=dict)

    def narrow(self, hist: np.ndarray) -> None:
        """Move the prefix one digit down, to the digit holding the wanted row."""
        c = np.cumsum(hist[::-1])
        j = int(np.searchsorted(c, self.rank, side="right"))
        d = NBINS - 1 - j
        above = int(c[j] - hist[d])
        g = self.group
        if g.level < 4:
            g.hi |= d << (64 - BITS * (g.level + 1))
        else:
            g.lo |= d << (64 - BITS * (g.level - 3))
        g.level += 1
        self.rank -= above
        self.size = int(hist[d])

    def ready(self, bucket_limit: int) -> bool:
        return self.size <= bucket_limit or self.group.level == LEVELS

    def resolve(self, rows: pa.Table) -> tuple[float, int]:
        """(primary, tie-break) of the wanted row from the fetched bucket."""
        k1, k2 = rows.column("k1").to_numpy(), rows.column("k2").to_numpy()
        order = np.lexsort((rows.column("pos").to_numpy(), ~k2, ~k1))  # (k1, k2) descending, then position
        i = order[self.rank]
        return float(rows.column("p")[int(i)].as_py()), int(np.array([k2[i] ^ SIGN], dtype=np.uint64).view(np.int64)[0])


CountPass = Callable[[list[Group] | None], dict[str, np.ndarray]]
FetchPass = Callable[[list[Group]], dict[str, pa.Table]]


def select_thresholds(policy: Policy, count_pass: CountPass, fetch_pass: FetchPass, bucket_limit: int = 4096,
                      sources: Iterable[str] = ()) -> tuple[Policy, dict]:
    """The policy with thresholds and default_threshold, given passes over all chunks' key tables.

    count_pass(None) gives level-0 histograms per source; count_pass(groups) the next digit per group;
    fetch_pass(groups) the groups' rows. `sources`: every source in the data (one without verified-correct rows
    gets no threshold, as one that drops nothing). Returns (policy, stats) with the number of passes made."""
    first = count_pass(None)
    drops = RULES.get(policy.rule).drops
    thresholds: dict[str, Threshold | None] = {}
    targets: dict[str, Target] = {}
    dropping = []
    for source in sorted(set(first) | set(sources)):
        n = int(first[source].sum()) if source in first else 0
        k = n_to_drop(policy.drop_top, n) if drops else 0
        thresholds[source] = None
        if k:
            t = Target(Group(f"s:{source}", (source,)), k - 1, n, n, k)
            t.narrow(first[source])
            targets[source] = t
            dropping.append(source)
    default_target = None
    if dropping:
        hist = sum(first[s] for s in dropping)
        hist[list(NON_FINITE_DIGITS)] = 0
        n_g = int(hist.sum())
        if n_g:
            idx = int(np.ceil((n_g - 1) * np.asanyarray(1.0 - policy.drop_top)).astype(np.intp))
            default_target = Target(Group("default", tuple(dropping)), n_g - 1 - idx, n_g)
            default_target.narrow(hist)
    every = [*targets.values(), *([default_target] if default_target else [])]
    passes = 1
    while True:
        pending = [t for t in every if not t.ready(bucket_limit)]
        if not pending:
            break
        hists = count_pass([t.group for t in pending])
        passes += 1
        for t in pending:
            t.narrow(hists[t.group.gid])
    if every:
        rows = fetch_pass([t.group for t in every])
        passes += 1
        for source, t in targets.items():
            score, tb = t.resolve(rows[t.group.gid])
            thresholds[source] = Threshold(score=score + 0.0, tiebreak=tb, n_correct=t.n_correct, n_drop=t.n_drop)
    # + 0.0: -0.0 and 0.0 tie, and which of them a quantile picks is arbitrary; one spelling for both paths
    default = default_target.resolve(rows["default"])[0] + 0.0 if default_target else None
    policy = policy.model_copy(update={"thresholds": thresholds, "default_threshold": default})
    return policy, {"passes": passes, "fetched": sum(t.size for t in every)}


def thresholds_from_tables(tables: Callable[[], Iterable[pa.Table]], policy: Policy, bucket_limit: int = 4096,
                           sources: Iterable[str] = ()) -> tuple[Policy, dict]:
    """In-process: `tables()` yields every chunk's key table (KEY_SCHEMA) anew for each pass."""

    def count_pass(groups):
        total: dict[str, np.ndarray] = {}
        for keys in tables():
            add_counts(total, count_chunk(keys, groups))
        return total

    def fetch_pass(groups):
        parts: dict[str, list] = {}
        for keys in tables():
            for gid, t in fetch_chunk(keys, groups).items():
                parts.setdefault(gid, []).append(t)
        return {gid: pa.concat_tables(p) for gid, p in parts.items()}

    return select_thresholds(policy, count_pass, fetch_pass, bucket_limit, sources)
