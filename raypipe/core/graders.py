"""Graders: a trajectory's final answer against the reference, in Math-Verify's two verbs (extract, then grade).

A grader is constructed from the ScoringConfig, `setup()` once per process (it may start workers), then
`grade_many(pairs)` with (extracted answer or None, reference) pairs. The default is math-verify with a wall-clock
bound on every comparison (raypipe.core.verify). Register another with `@GRADERS.register("name")`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from raypipe.core.registry import Registry
from raypipe.core.verify import VERIFIER_VERSION, Grade, Verifier, extract

if TYPE_CHECKING:
    from raypipe.core.scoring import ScoringConfig


class Grader:
    name: ClassVar[str]
    version: ClassVar[str]  # recorded in manifests; an online scorer refuses a manifest graded by another version

    def __init__(self, config: "ScoringConfig"):
        self.config = config

    def setup(self) -> "Grader":
        return self

    def close(self) -> None:
        pass

    def extract(self, text: str, boxed_only: bool = False) -> tuple[str | None, str]:
        """(answer, how it was found) in a final part; `boxed_only` for reasoning text (its last \\boxed{})."""
        raise NotImplementedError

    def grade_many(self, pairs: list[tuple[str | None, str]]) -> list[Grade]:
        raise NotImplementedError


GRADERS: Registry[Grader] = Registry("grader")


@GRADERS.register("math-verify")
class MathVerify(Grader):
    """The last \\boxed{} of the final part (then answer phrases, then a concluding display equation's right-hand
    side), compared by math-verify's LaTeX parser in bounded worker processes (never parse_expr, sympify or eval
    on untrusted text)."""

    version = VERIFIER_VERSION

    def __init__(self, config: "ScoringConfig"):
        super().__init__(config)
        self.verifier = Verifier(workers=config.verify_workers, timeout_s=config.verify_timeout_s)

    def setup(self) -> "MathVerify":
        self.verifier.setup()
        return self

    def close(self) -> None:
        self.verifier.close()

    def extract(self, text: str, boxed_only: bool = False) -> tuple[str | None, str]:
        return extract(text, boxed_only)

    def grade_many(self, pairs: list[tuple[str | None, str]]) -> list[Grade]:
        return self.verifier.grade_many(pairs)
