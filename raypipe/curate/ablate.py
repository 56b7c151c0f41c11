"""The paper's ablation: delete a random fraction of reasoning steps from a trajectory (seeded per row)."""
from __future__ import annotations

import random
import re

import pyarrow as pa

from raypipe.core.structure import segment_pattern


def delete_steps(response: str, start: int, end: int, fraction: float, seed: str, segmenter: str = "blank") -> tuple[str, int, int]:
    """(new response, new end of the reasoning span, steps deleted). Separators between kept steps are kept."""
    thinking = response[start:end]
    pieces = re.split(f"({segment_pattern(segmenter)})", thinking, flags=re.ASCII)
    steps = [i for i in range(0, len(pieces), 2) if pieces[i].strip()]
    k = int(fraction * len(steps) + 0.5)
    if k == 0:
        return response, end, 0
    gone = set(random.Random(seed).sample(steps, k))
    kept, first = [], True
    for i in range(0, len(pieces), 2):
        if i in gone:
            continue
        if not first and i > 0:
            kept.append(pieces[i - 1])
        kept.append(pieces[i])
        first = False
    new = "".join(kept)
    return response[:start] + new + response[end:], start + len(new), k


def delete_steps_table(table: pa.Table, fraction: float, seed: int, segmenter: str = "blank") -> pa.Table:
    """Apply the ablation to every row; the response and the offsets after the reasoning are updated."""
    responses, ends, fstarts, fends, counts = [], [], [], [], []
    for r in table.select(["id", "source", "response", "thinking_start", "thinking_end", "final_start", "final_end"]).to_pylist():
        new, new_end, k = delete_steps(r["response"], r["thinking_start"], r["thinking_end"], fraction,
                                       f"{seed}/{r['source']}/{r['id']}", segmenter)
        shift = new_end - r["thinking_end"]
        moved = r["final_start"] >= r["thinking_end"]
        responses.append(new)
        ends.append(new_end)
        fstarts.append(r["final_start"] + shift if moved else r["final_start"])
        fends.append(r["final_end"] + shift if moved or r["final_end"] >= r["thinking_end"] else r["final_end"])
        counts.append(k)
    out = table
    for name, values, typ in (("response", responses, pa.string()), ("thinking_end", ends, pa.int64()),
                              ("final_start", fstarts, pa.int64()), ("final_end", fends, pa.int64())):
        out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, type=typ))
    return out.append_column("steps_deleted", pa.array(counts, type=pa.int64()))
