"""Step segmentation and branch metrics, computed over Arrow arrays with pyarrow's RE2 kernels.

A step is a stretch of reasoning between separators (default: blank lines). A branch step is a step that
contains a marker of the chosen lexicon. `branch_ratio` = branch steps / steps is the paper's keyword proxy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from raypipe.core.blank_steps import blank_counts_apply, blank_step_counts
from raypipe.core.lexicon import Lexicon, LexiconSettings
from raypipe.core.registry import Registry
from raypipe.core.settings import SettingsGroup

@dataclass(frozen=True)
class Segmenter:
    name: str
    pattern: str  # the separator between steps (an RE2- and Python-compatible regex)
    description: str


SEGMENTERS: Registry[Segmenter] = Registry("segmenter")
SEGMENTERS.add("blank", Segmenter("blank", r"\n[ \t\r]*\n", "paragraphs separated by a blank line"))
SEGMENTERS.add("line", Segmenter("line", r"\n", "every line a step"))
# Tokens are estimated without a tokenizer, at 4 UTF-8 bytes a token (the usual BPE rule of thumb): a regex
# token count costs 10x more than every other kernel here together.
BYTES_PER_TOKEN = 4

STRUCTURE_FIELDS = [
    ("n_steps", pa.int64()),
    ("n_branch_steps", pa.int64()),
    ("branch_ratio", pa.float64()),
    ("n_markers", pa.int64()),
    ("markers_per_1k_tokens", pa.float64()),
    ("n_chars", pa.int64()),
    ("thinking_chars", pa.int64()),
    ("final_chars", pa.int64()),
    ("n_tokens", pa.int64()),
    ("thinking_tokens", pa.int64()),
]


def segment_pattern(segmenter: str) -> str:
    """The separator regex of a named segmenter, or the regex given."""
    return SEGMENTERS.get(segmenter).pattern if segmenter in SEGMENTERS else segmenter


class SegmenterSettings(SettingsGroup):
    segmenter: str = Field("blank", description="step separator: blank (blank lines), line, or a regex")

    @field_validator("segmenter")
    @classmethod
    def _valid(cls, v: str) -> str:
        if v not in SEGMENTERS:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"segmenter {v!r} is neither {SEGMENTERS.names()} nor a regex: {e}") from None
        return v


class StructureSettings(LexiconSettings, SegmenterSettings):
    """How reasoning is cut into steps and which words open a branch."""


def split_steps(text: str, segmenter: str = "blank") -> list[str]:
    """The steps of one reasoning text (plain Python; the Arrow path below gives the same steps)."""
    return [s for s in re.split(segment_pattern(segmenter), text, flags=re.ASCII) if s and not s.isspace()]


def estimate_tokens(texts: pa.Array) -> np.ndarray:
    nbytes = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    return (nbytes + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _per_row(values: np.ndarray, parents: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(parents, weights=values, minlength=n).astype(np.int64)


def _step_counts(thinking: pa.Array, lexicon: Lexicon, segmenter: str) -> tuple[np.ndarray, ...]:
    """(n_steps, n_branch_steps, n_markers) by splitting into steps and counting markers in each: any segmenter."""
    n = len(thinking)
    steps = pc.split_pattern_regex(thinking, segment_pattern(segmenter))
    flat = pc.list_flatten(steps)
    parents = pc.list_parent_indices(steps).to_numpy()
    nonempty = pc.and_(pc.greater(pc.binary_length(flat), 0), pc.invert(pc.utf8_is_space(flat)))
    # Markers are counted per step (a marker never spans a blank line), so one pass gives both counts.
    per_step = pc.count_substring_regex(flat, lexicon.pattern()).to_numpy(zero_copy_only=False)
    return (_per_row(nonempty.to_numpy(zero_copy_only=False).astype(np.int64), parents, n),
            _per_row((per_step > 0).astype(np.int64), parents, n), _per_row(per_step.astype(np.int64), parents, n))


def measure(thinking: pa.Array, response: pa.Array, lexicon: Lexicon, segmenter: str = "blank",
            final: pa.Array | None = None) -> dict[str, pa.Array]:
    """Structure columns for a batch of reasoning texts (and their full responses and final parts, for lengths)."""
    thinking = pc.fill_null(thinking, "")
    if isinstance(thinking, pa.ChunkedArray):
        thinking = thinking.combine_chunks()
    n = len(thinking)
    if segmenter == "blank" and blank_counts_apply(lexicon) and n:
        n_steps, n_branch, n_markers = blank_step_counts(thinking, lexicon)
    else:
        n_steps, n_branch, n_markers = _step_counts(thinking, lexicon, segmenter)
    think_tokens = estimate_tokens(thinking)
    resp_tokens = estimate_tokens(pc.fill_null(response, ""))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n_steps > 0, n_branch / np.maximum(n_steps, 1), np.nan)
        per_1k = np.where(think_tokens > 0, 1000.0 * n_markers / np.maximum(think_tokens, 1), 0.0)
    return {
        "n_steps": pa.array(n_steps),
        "n_branch_steps": pa.array(n_branch),
        "branch_ratio": pa.array(ratio, mask=np.isnan(ratio)),
        "n_markers": pa.array(n_markers.astype(np.int64)),
        "markers_per_1k_tokens": pa.array(per_1k),
        "n_chars": pc.utf8_length(pc.fill_null(response, "")).cast(pa.int64()),
        "thinking_chars": pc.utf8_length(thinking).cast(pa.int64()),
        "final_chars": pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(
            final if final is not None else pa.nulls(n, pa.string()), ""))).cast(pa.int64()),
        "n_tokens": pa.array(resp_tokens.astype(np.int64)),
        "thinking_tokens": pa.array(think_tokens.astype(np.int64)),
    }


def measure_python(text: str, lexicon: Lexicon, segmenter: str = "blank") -> dict:
    """The same metrics for one text in plain Python: the reference the Arrow path is tested against."""
    steps = split_steps(text, segmenter)
    pat = lexicon.regex
    branch = sum(1 for s in steps if pat.search(s))
    tokens = -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)
    markers = sum(len(pat.findall(s)) for s in steps)
    return {
        "n_steps": len(steps),
        "n_branch_steps": branch,
        "branch_ratio": branch / len(steps) if steps else None,
        "n_markers": markers,
        "thinking_tokens": tokens,
        "markers_per_1k_tokens": 1000.0 * markers / tokens if tokens else 0.0,
    }
