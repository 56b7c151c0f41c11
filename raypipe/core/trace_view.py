"""One record as a reader sees it: its reasoning cut into the scorer's steps, each step in pieces that are or are not
a branch marker, beside its verdict, decision and answers. The HTML report and `raypipe inspect` format the same view.

Steps come from structure.split_steps and markers from the lexicon's own regex: the plain-Python reference the
scorer's Arrow kernels are tested against, so a highlighted step is a step the scorer counted as a branch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from raypipe.core.lexicon import Lexicon
from raypipe.core.structure import split_steps

Pieces = tuple[tuple[str, bool], ...]  # (text, is a marker), in order; joined, the text they cut


@dataclass(frozen=True)
class Step:
    number: int  # 1-based, as the scorer counts steps
    pieces: Pieces

    @property
    def branch(self) -> bool:
        return any(marker for _, marker in self.pieces)

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.pieces)

    @property
    def markers(self) -> list[str]:
        return [t for t, marker in self.pieces if marker]


def marked(text: str, lexicon: Lexicon) -> Pieces:
    """`text` in pieces, the lexicon's markers apart."""
    pieces, at = [], 0
    for m in lexicon.regex.finditer(text):
        if m.start() > at:
            pieces.append((text[at:m.start()], False))
        if m.end() > m.start():
            pieces.append((m.group(), True))
        at = m.end()
    if at < len(text):
        pieces.append((text[at:], False))
    return tuple(pieces)


def steps(thinking: str, lexicon: Lexicon, segmenter: str = "blank") -> list[Step]:
    """The scorer's steps of a reasoning (their surrounding whitespace aside), markers apart."""
    return [Step(i, marked(s.strip(), lexicon)) for i, s in enumerate(split_steps(thinking or "", segmenter), start=1)]


@dataclass(frozen=True)
class RecordView:
    id: str
    source: str
    decision: str | None
    reason: str | None
    verdict: str | None
    answer: str | None  # the extracted answer
    reference: str | None
    problem: str
    final: str
    steps: list[Step]
    n_steps: int | None  # the record's own counts (of its whole reasoning, where the view holds a cut)
    n_branch_steps: int | None
    branch_ratio: float | None
    branch_score: float | None
    threshold: float | None
    cut_chars: int = 0  # reasoning characters left out of this view (a bounded copy); 0: the whole reasoning
    extra: dict = field(default_factory=dict)  # e.g. the report's example category

    @property
    def branch_steps(self) -> int:
        return sum(s.branch for s in self.steps)


def view(row: dict, lexicon: Lexicon, segmenter: str = "blank") -> RecordView:
    """The view of one output row (a dict of the curated/dropped columns, or a report example)."""
    def num(name):
        v = row.get(name)
        return None if v is None or v != v else v  # NaN: none

    return RecordView(
        id=str(row.get("id")), source=str(row.get("source")), decision=row.get("decision"), reason=row.get("reason"),
        verdict=row.get("verdict"), answer=row.get("answer_extracted"), reference=row.get("reference_answer"),
        problem=row.get("problem") or "", final=row.get("final") or "",
        steps=steps(row.get("thinking") or "", lexicon, segmenter),
        n_steps=num("n_steps"), n_branch_steps=num("n_branch_steps"), branch_ratio=num("branch_ratio"),
        branch_score=num("branch_score"), threshold=num("threshold"), cut_chars=int(row.get("cut_chars") or 0))


def branching(v: RecordView) -> str:
    """'branch_ratio 0.354 (63 of 178 steps)': the record's own counts, of its whole reasoning."""
    ratio = "-" if v.branch_ratio is None else f"{v.branch_ratio:.3f}"
    counts = f"{v.n_branch_steps} of {v.n_steps} steps" if v.n_steps is not None else f"{len(v.steps)} steps"
    return f"branch_ratio {ratio} ({counts})"


def fold_point(step: Step, head: int, after_marker: int = 150) -> int:
    """Where a renderer folds a long step: after `head` characters, or later so that its first marker shows."""
    n = 0
    for text, marker in step.pieces:
        if marker:
            return max(head, n + len(text) + after_marker)
        n += len(text)
    return head


def split_at(pieces: Pieces, chars: int) -> tuple[Pieces, Pieces]:
    """The pieces of a step's first `chars` characters and of the rest (a marker is never cut: it goes whole to
    the side it starts on), for a renderer that folds long steps."""
    head, tail, n = [], [], 0
    for text, marker in pieces:
        if n >= chars:
            tail.append((text, marker))
        elif marker or n + len(text) <= chars:
            head.append((text, marker))
        else:
            head.append((text[: chars - n], False))
            tail.append((text[chars - n:], False))
        n += len(text)
    return tuple(head), tuple(tail)
