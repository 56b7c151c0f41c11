"""A row's reason without its particulars: what the manifest and the report count rows by.

A decision's reason is its rule's name and then details: "verdict:wrong", "rule:top (highest branch_score, top 10%
of its source)", "duplicate (… as id r7)", each maybe followed by "; <note on where the answer came from>"
(raypipe.core.policy). A reject's reason is a message with the row's own numbers in it ("response of 123 chars is
over the limit of 100"): they become N, so rejects of one kind count together.
"""
from __future__ import annotations

import re

MAX_CHARS = 120


def reason_kind(reason: str | None) -> str:
    """'rule:top', 'verdict:wrong', 'duplicate', 'empty reasoning', 'kept', … for a decision's reason."""
    if not reason:
        return "none"
    return reason.split(";", 1)[0].split(" (", 1)[0].strip() or "none"


def reject_kind(reason: str | None) -> str:
    """A reject's reason with its numbers as N (and cut to MAX_CHARS)."""
    if not reason:
        return "none"
    text = re.sub(r"\d+", "N", " ".join(reason.split()))
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"
