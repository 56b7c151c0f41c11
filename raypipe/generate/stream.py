"""A trace scored while it is written (no Ray here): the reasoning's steps and branch markers counted chunk by chunk,
with the same markup rule, segmenter and lexicon as the batch job, so that the counts after the last chunk are those
of the finished text (tests/test_generate.py checks it on every real trace).

    scorer = StreamScorer(lexicon, "blank")
    for chunk in deltas:                  # raw response text, or reasoning deltas (reasoning=True)
        scorer.feed(chunk)
        if abort_rule(scorer.state()): …  # stop paying for a trace that will be dropped
    final = scorer.state()                # == structure.measure_python(the record's thinking)

Only completed steps are counted while the trace streams (a step ends at a separator; a separator is final once it
is whole), so the running counts never overshoot the finished text's. The reasoning span is found by
raypipe.core.schema.markup_bounds, asked again only when a chunk brings a `<` (every tag has one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from raypipe.core.lexicon import Lexicon
from raypipe.core.schema import harmony_reasoning, markup_bounds
from raypipe.core.structure import BYTES_PER_TOKEN, segment_pattern

LOOKAHEAD = 64  # characters a custom segmenter's separator may still grow by; the blank and line separators never do


@dataclass(frozen=True)
class StreamState:
    """The reasoning so far: completed steps (and, after `finish`, the last one), markers, tokens."""

    n_steps: int
    n_branch_steps: int
    n_markers: int
    chars: int  # every character received
    reasoning_chars: int
    thought_complete: bool  # the reasoning's closing tag has arrived
    finished: bool

    @property
    def branch_ratio(self) -> float | None:
        return self.n_branch_steps / self.n_steps if self.n_steps else None

    @property
    def tokens(self) -> int:
        """Tokens received, estimated as the batch job does (4 UTF-8 bytes each) when the engine does not say."""
        return -(-self.chars // BYTES_PER_TOKEN)


class StreamScorer:
    def __init__(self, lexicon: Lexicon, segmenter: str = "blank", reasoning: bool = False,
                 expected_markup: str | None = None):
        """`reasoning=True`: the chunks are the reasoning itself (an API's `reasoning_content`), not a raw response.
        `expected_markup`: the markup of the source (see markup_bounds), e.g. for a reasoning opened in the prompt."""
        self.marker = re.compile(lexicon.pattern(), re.ASCII)
        self.separator = re.compile(segment_pattern(segmenter), re.ASCII)
        self.exact_separators = segmenter in ("blank", "line")
        self.reasoning_only, self.expected = reasoning, expected_markup
        self.text = ""
        self.bounds = (0, 0, 0, 0, not reasoning, "reasoning_content" if reasoning else "plain")
        self._reset(0)
        self.finished = False

    def _reset(self, start: int) -> None:
        self.start = self.counted = start  # counted: where the next uncounted step begins
        self.n_steps = self.n_branch = self.n_markers = 0

    def _count(self, step: str) -> None:
        if step and not step.isspace():
            hits = len(self.marker.findall(step))
            self.n_steps += 1
            self.n_branch += hits > 0
            self.n_markers += hits

    def feed(self, chunk: str) -> StreamState:
        if self.finished:
            raise ValueError("the trace is finished")
        seen = len(self.text)
        self.text += chunk
        if not self.reasoning_only and ("<" in chunk or "<" in self.text[max(0, seen - 32):seen]):
            self.bounds = markup_bounds(self.text, 0, len(self.text), self.expected)
        start, end = self._span()
        if start != self.start:
            self._reset(start)
        self._advance(end, final=False)
        return self.state()

    def finish(self) -> StreamState:
        """The last step counted: the counts are now the finished text's."""
        if not self.finished:
            if not self.reasoning_only:
                self.bounds = markup_bounds(self.text, 0, len(self.text), self.expected)
            start, end = self._span()
            if self.bounds[5] == "harmony" and "<|" in self.text[start:end]:  # several messages: their plain text
                self._reset(start)
                self._steps_of(harmony_reasoning(self.text[start:end]))
            else:
                if start != self.start:
                    self._reset(start)
                self._advance(end, final=True)
            self.finished = True
        return self.state()

    def _span(self) -> tuple[int, int]:
        if self.reasoning_only:
            return 0, len(self.text)
        ts, te, _, _, complete, markup = self.bounds
        # a plain response is all reasoning, and an unfinished reasoning runs to the end of what has arrived (the
        # bounds said so when last asked, and no tag has come since)
        return ts, len(self.text) if markup == "plain" or not complete else te

    def _advance(self, end: int, final: bool) -> None:
        span = self.text[self.counted:end]
        limit = len(span) if final or self.exact_separators else len(span) - LOOKAHEAD
        pos = 0
        for m in self.separator.finditer(span):
            if m.end() > limit or (not final and m.end() == len(span) and not self.exact_separators):
                break
            self._count(span[pos:m.start()])
            pos = m.end()
        if final:
            self._count(span[pos:])
            pos = len(span)
        self.counted += pos

    def _steps_of(self, text: str) -> None:
        for step in self.separator.split(text):
            self._count(step)

    def state(self) -> StreamState:
        ts, te = self._span()
        complete = self.reasoning_only and self.finished or (not self.reasoning_only and self.bounds[4]
                                                             and self.bounds[5] != "plain")
        return StreamState(self.n_steps, self.n_branch, self.n_markers, len(self.text), te - ts, bool(complete),
                           self.finished)
