"""Blank-line steps and lexicon markers of a batch in one regex pass (the fast path of the default segmenter).

The reasoning texts are split at the lexicon's markers (RE2, the only regex pass). The blank-line separators are
then found with numpy in the pieces' bytes: every pair of consecutive newlines with only spaces, tabs and CRs
between. re.split(r"\\n[ \\t\\r]*\\n") takes every other pair of a run of such pairs; the rest of a run is
whitespace, never a step, so taking them all counts the same steps (the spans between overlapping pairs are empty).
Steps, branch steps and markers per row follow from where the separators and the cuts fall.

This gives what splitting into steps and counting markers in each step gives when no marker match can span a
separator: markers of one word (no whitespace in a match), each with a letter or digit (a step holding a match is
never whitespace). Multi-word lexicons take the split path.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core.lexicon import Lexicon

_BLANK = np.zeros(256, dtype=bool)
_BLANK[[9, 13, 32]] = True  # what may stand between the two newlines of a separator
_VISIBLE = np.zeros(256, dtype=bool)
_VISIBLE[0x21:0x7F] = True  # printable ASCII: a step that starts or ends with one is not whitespace


def blank_counts_apply(lexicon: Lexicon) -> bool:
    """Whether the fast path is exact for the lexicon: every marker is one word with a letter or digit in it."""
    return bool(lexicon.markers) and all(len(m.split()) == 1 and any(c.isalnum() for c in m) for m in lexicon.markers)


def value_offsets(arr: pa.Array) -> np.ndarray:
    """The value offsets of a (large) string or list array as int64, its slice offset applied."""
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_list(arr.type) else np.int32
    return np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)


def _separators(data: np.ndarray, nl: np.ndarray, po: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair index, piece) of each pair of consecutive newlines with only [ \t\r] between, inside one piece."""
    a, b = nl[:-1], nl[1:]
    good = b - a == 1
    idx = np.flatnonzero(b - a > 1)
    idx = idx[_BLANK[data[a[idx] + 1]]]
    pos, end = a[idx] + 1, b[idx]
    while idx.size:  # walk the (few, short) gaps that start blank, one byte a round
        pos = pos + 1
        done = pos >= end
        good[idx[done]] = True
        idx, pos, end = idx[~done], pos[~done], end[~done]
        blank = _BLANK[data[pos]]
        idx, pos, end = idx[blank], pos[blank], end[blank]
    pair = np.flatnonzero(good)
    piece = np.searchsorted(po, a[pair], side="right") - 1
    same = piece == np.searchsorted(po, b[pair], side="right") - 1
    return pair[same], piece[same]


def _whitespace_only(values: pa.Array, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """utf8_is_space of the disjoint, ordered byte spans [starts, ends) of the values' data buffer."""
    if not starts.size:
        return np.zeros(0, dtype=bool)
    offs = np.stack([starts, ends], axis=1).ravel().astype(np.int64)
    spans = pa.Array.from_buffers(pa.large_string(), offs.size - 1, [None, pa.py_buffer(offs), values.buffers()[2]])
    return pc.utf8_is_space(spans).to_numpy(zero_copy_only=False)[::2]


def blank_step_counts(thinking: pa.Array, lexicon: Lexicon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_steps, n_branch_steps, n_markers) of a string array without nulls, for the blank-line segmenter."""
    n = len(thinking)
    pieces = pc.split_pattern_regex(thinking, lexicon.pattern())
    rows = value_offsets(pieces)
    values = pieces.flatten()
    po = value_offsets(values)
    per_row = np.diff(rows)
    piece_row = np.repeat(np.arange(n), per_row)
    buf = values.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, dtype=np.uint8)
    nl = np.flatnonzero(data[po[0]:po[-1]] == 10) + po[0]
    pair, sep_piece = _separators(data, nl, po)
    sep_start, sep_end = nl[pair], nl[pair + 1] + 1
    sep_row = piece_row[sep_piece]
    seps = np.bincount(sep_row, minlength=n)
    # Markers sit at the cuts: the start of every piece but the first of its row.
    first = np.zeros(len(values), dtype=bool)
    first[rows[:-1]] = True
    cut = np.flatnonzero(~first)
    match_row = piece_row[cut]
    # A position's step, numbered over the batch: its row plus the separators that start before it.
    match_step = match_row + np.searchsorted(sep_start, po[cut], side="left")
    new_step = np.ones(match_step.size, dtype=np.float64)
    new_step[1:] = match_step[1:] != match_step[:-1]
    n_branch = np.bincount(match_row, weights=new_step, minlength=n).astype(np.int64)
    # Every step's byte span; a step without a marker is counted unless empty or whitespace.
    n_total = n + sep_start.size
    row_first = np.arange(n) + np.concatenate([[0], np.cumsum(seps)[:-1]]).astype(np.int64)
    t = np.arange(sep_start.size)
    step_start, step_end = np.empty(n_total, dtype=np.int64), np.empty(n_total, dtype=np.int64)
    step_start[row_first], step_end[row_first + seps] = po[rows[:-1]], po[rows[1:]]
    step_end[sep_row + t], step_start[sep_row + t + 1] = sep_start, sep_end
    marked = np.zeros(n_total, dtype=bool)
    marked[match_step] = True
    bad = ~marked & (step_end <= step_start)
    maybe = np.flatnonzero(~marked & (step_end > step_start))
    maybe = maybe[~_VISIBLE[data[step_start[maybe]]] & ~_VISIBLE[data[step_end[maybe] - 1]]]
    bad[maybe[_whitespace_only(values, step_start[maybe], step_end[maybe])]] = True
    n_steps = 1 + seps - np.bincount(np.repeat(np.arange(n), 1 + seps)[bad], minlength=n)
    return n_steps.astype(np.int64), n_branch, (per_row - 1).astype(np.int64)
