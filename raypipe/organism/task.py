"""The model organism's task family and its two teachers: pure, seeded Python (no Ray, no torch).

A problem is a chain of integer operations on a start value ("Start with 17. Apply + 8, then * 2, then - 5. What
is the result?"): a short numeric answer, graded from `\\boxed{}` by the same verifier as real data, and learnable
by a small transformer on two cores. The difficulty is the number of operations and the range of the numbers; the
harder split holds the longest chains.

The convergent teacher computes the chain in order, one deductive step per operation. The divergent teacher
computes the same chain but opens alternatives with the paper's markers ("Perhaps…", "Alternatively…", "Another
approach…"), works some out, abandons them and comes back; how often it branches varies per trace, with a heavy
tail. Both teachers sometimes slip (a wrong step carried to a wrong answer) or are cut off mid-reasoning.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import ConfigDict, Field, model_validator

from raypipe.core.schema import stable_hash
from raypipe.core.settings import SettingsGroup


class Difficulty(SettingsGroup):
    """The problems of one split."""

    model_config = ConfigDict(extra="forbid")

    min_ops: int = Field(1, ge=1, description="fewest operations in a chain")
    max_ops: int = Field(5, ge=1, description="most operations in a chain")
    min_start: int = Field(2, ge=0, description="smallest start value")
    max_start: int = Field(20, ge=2, description="largest start value")
    max_add: int = Field(9, ge=1, description="largest number added or subtracted")
    max_factor: int = Field(2, ge=2, description="largest multiplier")
    max_value: int = Field(50, ge=10, description="no intermediate value exceeds this (nor goes below 0)")

    @model_validator(mode="after")
    def _order(self) -> "Difficulty":
        if self.min_ops > self.max_ops or self.min_start > self.max_start:
            raise ValueError("min_ops exceeds max_ops, or min_start exceeds max_start")
        return self


class TeacherStyle(SettingsGroup):
    """How a teacher writes: how often it branches, slips and is cut off."""

    model_config = ConfigDict(extra="forbid")

    branch_alpha: float = Field(0.0, ge=0, description="per-trace branching rate ~ Beta(alpha, beta) (0: never "
                                "branches); the rate is the chance of opening an alternative before each step")
    branch_beta: float = Field(2.0, gt=0, description="see branch_alpha")
    max_branch_rate: float = Field(0.9, ge=0, le=1, description="cap on the per-trace branching rate")
    slip_rate: float = Field(0.08, ge=0, le=1, description="share of traces with one wrong step (a wrong answer)")
    cut_rate: float = Field(0.05, ge=0, le=1, description="share of traces cut off mid-reasoning (no answer)")


OPS = ("add", "subtract", "multiply")
SYMBOL = {"add": "+", "subtract": "-", "multiply": "*"}


@dataclass(frozen=True)
class Problem:
    id: str
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def text(self) -> str:
        chain = ", then ".join(f"{SYMBOL[op]} {k}" for op, k in self.ops)
        return f"Start with {self.start}. Apply {chain}. What is the result?"

    def values(self) -> list[int]:
        out = [self.start]
        for op, k in self.ops:
            out.append(apply(op, out[-1], k))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]


def apply(op: str, x: int, k: int) -> int:
    return x + k if op == "add" else x - k if op == "subtract" else x * k


def rng_for(seed: int, *key) -> random.Random:
    return random.Random(int(stable_hash(str(seed), *map(str, key), n=16), 16))


def make_problem(rng: random.Random, d: Difficulty, pid: str) -> Problem:
    while True:
        x = start = rng.randint(d.min_start, d.max_start)
        ops = []
        for _ in range(rng.randint(d.min_ops, d.max_ops)):
            choices = [o for o in OPS if o != "multiply" or x * 2 <= d.max_value]
            op = rng.choice(choices)
            if op == "multiply":
                k = rng.randint(2, max(2, min(d.max_factor, d.max_value // max(x, 1))))
            elif op == "subtract":
                if x < 2:
                    op, k = "add", rng.randint(1, d.max_add)
                else:
                    k = rng.randint(1, min(d.max_add, x))
            else:
                k = rng.randint(1, max(1, min(d.max_add, d.max_value - x)))
            x = apply(op, x, k)
            ops.append((op, k))
        if all(0 <= v <= d.max_value for v in Problem(pid, start, tuple(ops)).values()):
            return Problem(pid, start, tuple(ops))


def problems(seed: int, split: str, n: int, d: Difficulty, exclude: set[str] | None = None) -> list[Problem]:
    """n distinct problems of a split; `exclude` holds problem texts of other splits (no test problem is trained)."""
    out, seen = [], set(exclude or ())
    i = 0
    while len(out) < n:
        p = make_problem(rng_for(seed, split, i), d, f"{split}-{len(out):05d}")
        i += 1
        if p.text not in seen:
            seen.add(p.text)
            out.append(p)
        if i > 50 * n + 1000:
            raise ValueError(f"split {split}: only {len(out)} distinct problems of {n} exist at this difficulty")
    return out


@dataclass
class Trace:
    steps: list[str]
    final: str | None  # None: cut off before the answer
    answer: int | None  # the answer the trace gives
    n_branches: int


def _detour(rng: random.Random, x: int, op: str, k: int, later: list[tuple[str, int]], limit: int) -> list[str]:
    """An alternative the divergent teacher opens before applying (op, k) to x, works out and abandons. Its
    computations are right and stay within [0, limit]: what makes it a detour is that it leaves the problem."""
    def fits(o: str, v: int) -> bool:
        return 0 <= apply(o, x, v) <= limit

    kind = rng.randrange(4)
    if kind == 0 and later and fits(*later[0]):
        nop, nk = later[0]
        return [f"Perhaps it is easier to apply {SYMBOL[nop]} {nk} first: {x} {SYMBOL[nop]} {nk} = {apply(nop, x, nk)}.",
                f"That changes the order of the operations, so it is not allowed. Back to {x}."]
    others = [o for o in OPS if o != op and fits(o, k)]
    if kind == 1 and others:
        other = rng.choice(others)
        return [f"Alternatively, we could apply {SYMBOL[other]} {k} instead: {x} {SYMBOL[other]} {k} = "
                f"{apply(other, x, k)}.",
                f"But the problem says {SYMBOL[op]} {k}. Back to {x}."]
    if kind in (0, 2):
        return ["Another approach is to work backwards from the result.",
                f"Perhaps that needs the result first, which we do not have. Back to {x}."]
    return ["Alternatively, we could guess the result and check it.",
            f"Another idea is to estimate it, but an estimate is not exact. Back to {x}."]


def solve(p: Problem, style: TeacherStyle, rng: random.Random, limit: int) -> Trace:
    """The teacher's trace of problem p; `limit` bounds the numbers of its detours (the split's max_value)."""
    rate = 0.0
    if style.branch_alpha > 0:
        rate = min(style.max_branch_rate, rng.betavariate(style.branch_alpha, style.branch_beta))
    slip_at = rng.randrange(len(p.ops)) if rng.random() < style.slip_rate else None
    cut = rng.random() < style.cut_rate
    x = p.start
    steps, branches = [f"We start with {x}."], 0
    for i, (op, k) in enumerate(p.ops):
        while rng.random() < rate and branches < 12:
            steps += _detour(rng, x, op, k, list(p.ops[i + 1:]), limit)
            branches += 1
        y = apply(op, x, k)
        if i == slip_at:
            y += rng.choice((-2, -1, 1, 2))
        steps.append(f"{x} {SYMBOL[op]} {k} = {y}.")
        x = y
    if cut:
        return Trace(steps[: max(1, rng.randint(1, len(steps) - 1))], None, None, branches)
    steps.append(f"So the result is {x}.")
    return Trace(steps, f"The result is \\boxed{{{x}}}.", x, branches)
