"""The paper's ablation: delete a random fraction of reasoning steps from a trajectory (seeded per row).

Steps are deleted from the canonical reasoning (`thinking`), which SFT trains on; the raw `response` is kept as it
came in, and `steps_deleted` says how many steps each row lost.
"""
from __future__ import annotations

import random
import re

import pyarrow as pa

from raypipe.core.structure import segment_pattern


def delete_steps_text(thinking: str, fraction: float, seed: str, segmenter: str = "blank") -> tuple[str, int]:
    """(the reasoning without round(fraction x steps) of its steps, steps deleted). Separators between kept steps
    are kept."""
    pieces = re.split(f"({segment_pattern(segmenter)})", thinking, flags=re.ASCII)
    steps = [i for i in range(0, len(pieces), 2) if pieces[i].strip()]
    k = int(fraction * len(steps) + 0.5)
    if k == 0:
        return thinking, 0
    gone = set(random.Random(seed).sample(steps, k))
    kept, first = [], True
    for i in range(0, len(pieces), 2):
        if i in gone:
            continue
        if not first and i > 0:
            kept.append(pieces[i - 1])
        kept.append(pieces[i])
        first = False
    return "".join(kept), k


def delete_steps(response: str, start: int, end: int, fraction: float, seed: str, segmenter: str = "blank") -> tuple[str, int, int]:
    """The same on a reasoning span response[start:end]: (new text, new end of the span, steps deleted)."""
    new, k = delete_steps_text(response[start:end], fraction, seed, segmenter)
    return response[:start] + new + response[end:], start + len(new), k


def delete_steps_table(table: pa.Table, fraction: float, seed: int, segmenter: str = "blank") -> pa.Table:
    """Apply the ablation to every row's `thinking` (seeded by seed, source and id); `response` is unchanged."""
    thinking, counts = [], []
    for r in table.select(["id", "source", "thinking"]).to_pylist():
        new, k = delete_steps_text(r["thinking"] or "", fraction, f"{seed}/{r['source']}/{r['id']}", segmenter)
        thinking.append(new if r["thinking"] is not None else None)
        counts.append(k)
    out = table.set_column(table.schema.get_field_index("thinking"), "thinking", pa.array(thinking, pa.string()))
    counts_array = pa.array(counts, type=pa.int64())
    if "steps_deleted" in out.column_names:
        return out.set_column(out.schema.get_field_index("steps_deleted"), "steps_deleted", counts_array)
    return out.append_column("steps_deleted", counts_array)
