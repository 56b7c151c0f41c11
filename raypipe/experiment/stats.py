"""The statistics of the results table: intervals over seeds and over problems, and a paired test of two arms.
Pure functions on plain values (no scipy: Student's t quantiles from a table)."""
from __future__ import annotations

import math
from statistics import mean, stdev

# Student's t, two-sided 95 % (the 0.975 quantile), by degrees of freedom; past 30, the normal's 1.96.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_ci(values: list[float]) -> tuple[float | None, list[float] | None]:
    """(mean, 95 % t-interval of the mean); no interval from fewer than two values."""
    if not values:
        return None, None
    m = mean(values)
    if len(values) < 2:
        return m, None
    half = t975(len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return m, [m - half, m + half]


def seeds_for(half_width: float | None, n_seeds: int, target: float) -> int | None:
    """Seeds needed for a 95 % half-width of `target`, scaling the measured one by 1/sqrt(n) (t ~ normal)."""
    if half_width is None or n_seeds < 2:
        return None
    if half_width <= target:
        return n_seeds
    return math.ceil(n_seeds * (half_width / target) ** 2)


def accuracy_table(per_seed: dict[int, dict[str, float]]) -> dict:
    """Per-seed problem accuracies {seed: {problem: share correct}} -> mean, interval over seeds and over problems.

    `ci95` is over seeds (the spread of training runs) when there are two or more, else over problems;
    `ci95_problems` is always over problems (each problem's accuracy averaged across the seeds)."""
    seeds = {s: sum(v.values()) / len(v) for s, v in sorted(per_seed.items()) if v}
    m, over_seeds = mean_ci(list(seeds.values()))
    problems = sorted(set().union(*[set(v) for v in per_seed.values()])) if per_seed else []
    per_problem = [mean(per_seed[s][p] for s in per_seed if p in per_seed[s]) for p in problems]
    _, over_problems = mean_ci(per_problem)
    return {"mean": m, "ci95": over_seeds or over_problems, "ci95_over": "seeds" if over_seeds else "problems",
            "ci95_problems": over_problems, "seeds": {str(s): a for s, a in seeds.items()},
            "problems": len(problems)}


def paired_test(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]], rounds: int = 20000,
                seed: int = 0) -> dict | None:
    """Arm a against arm b on the same (seed, problem) pairs: the mean difference of accuracy, its 95 % interval
    (over seeds when two or more, else over pairs), and a two-sided sign-flip permutation test over the pairs (for
    one sample per problem, the exact McNemar test up to Monte Carlo error)."""
    diffs, by_seed = [], {}
    for s in sorted(set(a) & set(b)):
        common = sorted(set(a[s]) & set(b[s]))
        d = [a[s][p] - b[s][p] for p in common]
        if d:
            diffs += d
            by_seed[s] = mean(d)
    if not diffs:
        return None
    observed = mean(diffs)
    _, ci = mean_ci(list(by_seed.values()))
    over = "seeds"
    if ci is None:
        _, ci = mean_ci(diffs)
        over = "pairs"
    nonzero = [x for x in diffs if x]
    return {"difference": observed, "ci95": ci, "ci95_over": over, "pairs": len(diffs), "discordant": len(nonzero),
            "p_value": sign_flip_p(nonzero, rounds, seed), "seeds": len(by_seed)}


def sign_flip_p(diffs: list[float], rounds: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean for paired differences (zeros left out): exact McNemar (a binomial test on
    the discordant pairs) when every difference is +-1, else a seeded sign-flip permutation test."""
    if not diffs:
        return 1.0
    if all(abs(x) == 1 for x in diffs):
        n, k = len(diffs), sum(1 for x in diffs if x > 0)
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    import numpy as np

    x = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, rounds, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, rounds - start), len(x)))
        hits += int((np.abs(signs @ x) >= abs(x.sum()) - 1e-9).sum())
    return (hits + 1) / (rounds + 1)
