"""When to stop a trace that is being written (no Ray here): `--abort-when` rules on the running counts of
raypipe.generate.stream.

    markers>=21                          the 21st branch marker of the lexicon
    branch_steps>=12                     the 12th step that holds one
    branch_ratio>=0.4 after 30 steps     the share of branching steps, once 30 steps are complete
    branch_ratio>=threshold after 30 steps
                                         the source's own threshold: from --reference-manifest (an earlier run's
                                         policy), else the running quantile of this run's finished traces

The counts only grow (markers, branch steps), so the first two rules never stop a trace the finished-text filter
would count lower; a ratio can fall again, so ratio rules trade false aborts for savings
(benchmarks/generate_budget.py measures both on real traces).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from raypipe.generate.stream import StreamState

# The default of --abort-when: on the 630 real traces of ../shared/data, 39.5 % of the characters saved and no trace
# stopped that the finished-text filter keeps (benchmarks/generate_budget.py).
DEFAULT_ABORT = "branch_steps>=25"
METRICS = {"markers": "n_markers", "branch_steps": "n_branch_steps", "steps": "n_steps",
           "branch_ratio": "branch_ratio", "tokens": "tokens"}
_RULE = re.compile(r"^\s*(?P<metric>\w+)\s*>=\s*(?P<value>threshold|[0-9.]+)\s*(?:after\s+(?P<steps>\d+)\s+steps?)?\s*$")


@dataclass(frozen=True)
class AbortRule:
    metric: str
    value: float | None  # None: the source's threshold
    after_steps: int = 0

    @classmethod
    def parse(cls, text: str) -> "AbortRule":
        m = _RULE.match(text or "")
        if not m or m["metric"] not in METRICS:
            raise ValueError(f"--abort-when {text!r}: write METRIC>=VALUE [after N steps], METRIC one of "
                             f"{', '.join(METRICS)}, VALUE a number or `threshold` (branch_ratio)")
        if m["value"] == "threshold" and m["metric"] != "branch_ratio":
            raise ValueError("--abort-when: only branch_ratio compares with a source's threshold")
        return cls(m["metric"], None if m["value"] == "threshold" else float(m["value"]), int(m["steps"] or 0))

    @property
    def needs_threshold(self) -> bool:
        return self.value is None

    def check(self, state: StreamState, threshold: float | None = None) -> str | None:
        """The reason to stop this trace now, or None."""
        if state.n_steps < self.after_steps:
            return None
        limit = threshold if self.value is None else self.value
        current = getattr(state, METRICS[self.metric])
        if limit is None or current is None or current < limit:
            return None
        return f"aborted: {self}"

    def __str__(self) -> str:
        value = "threshold" if self.value is None else f"{self.value:g}"
        return f"{self.metric}>={value}" + (f" after {self.after_steps} steps" if self.after_steps else "")
