"""Benchmark metrics over graded samples: avg@n, unbiased pass@k, maj@n, and the outputs' branch statistics.

Pure functions on plain values. A sample is a dict with at least `problem_id`, `verdict`, `answer_extracted`;
the branch statistics read `n_steps`, `branch_ratio`, `thought_complete`, `finish_reason`, `n_tokens`.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

CORRECT = "correct"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def ks_for(n: int) -> list[int]:
    """1, 2, 4, … up to n, and n itself."""
    ks = [2 ** i for i in range(int(math.log2(n)) + 1)] if n > 0 else []
    return sorted(set(ks + ([n] if n > 0 else [])))


def answer_key(answer: str | None) -> str | None:
    """The form under which answers are counted as the same vote (spacing, $ and \\left/\\right ignored)."""
    if answer is None:
        return None
    key = re.sub(r"\\[,!;: ]|\\left|\\right|\\displaystyle|\s|\$", "", answer).rstrip(".")
    key = re.sub(r"\\[dt]frac", r"\\frac", key)
    return key or None


def majority_correct(samples: list[dict]) -> bool:
    """maj@n for one problem: the most frequent extracted answer (ties: the one seen first) is correct.

    Samples without an answer do not vote; a problem where no sample has an answer counts as wrong.
    """
    votes: Counter = Counter()
    first: dict[str, int] = {}
    verdict: dict[str, bool] = {}
    for i, s in enumerate(samples):
        key = answer_key(s.get("answer_extracted"))
        if key is None:
            continue
        votes[key] += 1
        first.setdefault(key, i)
        verdict[key] = verdict.get(key, False) or s.get("verdict") == CORRECT
    if not votes:
        return False
    best = max(votes, key=lambda k: (votes[k], -first[k]))
    return verdict[best]


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def branch_stats(samples: list[dict]) -> dict:
    """Structure of the model's own outputs: do they branch more, and how often do they stop unfinished?"""
    n = len(samples)
    if not n:
        return {}
    correct = [s for s in samples if s.get("verdict") == CORRECT]
    return {
        "mean_steps": _mean([s.get("n_steps") for s in samples]),
        "mean_branch_ratio": _mean([s.get("branch_ratio") for s in samples]),
        "mean_branch_ratio_correct": _mean([s.get("branch_ratio") for s in correct]),
        "mean_markers_per_1k_tokens": _mean([s.get("markers_per_1k_tokens") for s in samples]),
        "mean_tokens": _mean([s.get("n_tokens") for s in samples]),
        "unfinished_rate": sum(1 for s in samples if s.get("finish_reason") == "length"
                               or s.get("thought_complete") is False) / n,
        "truncated_rate": sum(1 for s in samples if s.get("finish_reason") == "length") / n,
        "no_answer_rate": sum(1 for s in samples if s.get("verdict") == "no_answer") / n,
        **judged_steps(samples),
    }


def judged_steps(samples: list[dict]) -> dict:
    """The keyword step judge's Propose share and P(Propose -> Propose) over the outputs' reasoning steps (grading
    stores each sample's labels as letters), as the judge reports them for the teachers' traces."""
    from raypipe.diagnostics.judge import LABELS, label_shares, transition_counts, transition_probs

    names = {label[0]: label for label in LABELS}
    seqs = [[names[c] for c in s["step_labels"]] for s in samples if s.get("step_labels") is not None]
    if not seqs:
        return {}
    _, shares = label_shares(seqs)
    return {"propose_share": shares["propose"], "p_propose_propose": transition_probs(transition_counts(seqs))[0][0]}


def benchmark_metrics(samples: list[dict], n: int) -> dict:
    """Metrics of one benchmark. Every problem must have exactly n graded samples."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_problem[s["problem_id"]].append(s)
    counts = Counter(len(v) for v in by_problem.values())
    if set(counts) - {n}:
        raise ValueError(f"every problem needs {n} samples; found sample counts {dict(counts)}")
    n_problems = len(by_problem)
    if not n_problems:
        return {"n": n, "problems": 0, "samples": 0}
    correct = {p: sum(1 for s in v if s.get("verdict") == CORRECT) for p, v in by_problem.items()}
    pass_k = {str(k): sum(pass_at_k(n, c, k) for c in correct.values()) / n_problems for k in ks_for(n)}
    verdicts = Counter(s.get("verdict") for s in samples)
    return {
        "avg@n": sum(correct.values()) / (n * n_problems),
        "pass@k": pass_k,
        "maj@n": sum(majority_correct(v) for v in by_problem.values()) / n_problems,
        "n": n,
        "problems": n_problems,
        "samples": len(samples),
        "verdicts": dict(sorted(verdicts.items())),
        "generation_errors": sum(1 for s in samples if s.get("generation_error")),
        "branch": branch_stats(samples),
    }


def overall(per_benchmark: dict[str, dict]) -> dict:
    """The unweighted mean over benchmarks, as in the paper's 'Avg.' column."""
    rows = [m for m in per_benchmark.values() if m.get("problems")]
    if not rows:
        return {"avg@n": None, "benchmarks": 0}
    return {
        "avg@n": sum(m["avg@n"] for m in rows) / len(rows),
        "pass@1": sum(m["pass@k"]["1"] for m in rows) / len(rows),
        "maj@n": sum(m["maj@n"] for m in rows) / len(rows),
        "benchmarks": len(rows),
        "mean_branch_ratio": _mean([m["branch"].get("mean_branch_ratio") for m in rows]),
    }
