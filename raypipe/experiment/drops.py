"""How much the filters agree: the Jaccard overlap between the sets of rows each drop arm's rule dropped (the paper
reports that its branching proxies drop rows that overlap little with a length filter)."""
from __future__ import annotations

import pyarrow.compute as pc

from raypipe.core import io


def dropped_ids(curate_out: str, storage: io.Storage) -> set[str] | None:
    """(source, id) of the rows an arm's rule dropped (not those dropped for their verdict or as duplicates)."""
    table = io.read_parquet_dir(io.join(curate_out, "dropped"), storage, columns=["source", "id", "reason"])
    if table is None:
        return None if not io.exists(io.join(curate_out, "manifest.json"), storage) else set()
    table = table.filter(pc.starts_with(pc.fill_null(table.column("reason"), ""), "rule:"))
    return {f"{s}\x00{i}" for s, i in zip(table.column("source").to_pylist(), table.column("id").to_pylist())}


def jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def overlaps(drops: dict[str, set]) -> dict:
    """{arms, dropped: {arm: n}, jaccard: [[arm_i, arm_j, J]]} over the arms whose drops are known."""
    arms = [a for a, v in drops.items() if v is not None]
    pairs = [[a, b, jaccard(drops[a], drops[b])] for i, a in enumerate(arms) for b in arms[i + 1:]]
    return {"arms": arms, "dropped": {a: len(drops[a]) for a in arms}, "jaccard": pairs}
