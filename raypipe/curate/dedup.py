"""Duplicates in the input: public datasets repeat themselves.

- An exact duplicate trajectory (same source, problem and response: the same `content_hash`) is dropped with reason
  `duplicate`; the first one in a stable order (input file order, then row, then record) is kept.
- Records that share a (source, id) get distinct ids (a duplicate too, so no id appears twice in the outputs): the
  first keeps its id, the k-th becomes `id#k`. The order is stable, so the ids are the same on every rerun and
  resume.

`find_duplicates` reads only the keys of every scored record and returns the records that change; group-bys are
Arrow's hash aggregations.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY_COLUMNS = ["shard", "row", "record", "source", "id", "content_hash"]
FIX_SCHEMA = pa.schema([("shard", pa.string()), ("row", pa.int64()), ("record", pa.int64()),
                        ("new_id", pa.string()), ("duplicate_of", pa.string())])


def _ranked(table: pa.Table, shard_order: dict[str, int]) -> pa.Table:
    shard_index = np.array([shard_order.get(s, len(shard_order)) for s in table.column("shard").to_pylist()])
    order = np.lexsort((table.column("record").to_numpy(), table.column("row").to_numpy(), shard_index))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return table.select(KEY_COLUMNS).append_column("rank", pa.array(rank))


def _renames(ranked: pa.Table) -> dict[int, str]:
    """{rank: new id} for every record but the first of each (source, id) shared by several."""
    shared = ranked.group_by(["source", "id"]).aggregate([("rank", "count")])
    shared = shared.filter(pc.greater(shared.column("rank_count"), 1)).select(["source", "id"])
    if shared.num_rows == 0:
        return {}
    clash = ranked.join(shared, ["source", "id"], join_type="inner").sort_by(
        [("source", "ascending"), ("id", "ascending"), ("rank", "ascending")])
    taken = set(zip(ranked.column("source").to_pylist(), ranked.column("id").to_pylist()))
    ranks = clash.column("rank").to_pylist()
    keys = zip(clash.column("source").to_pylist(), clash.column("id").to_pylist())
    return {ranks[i]: new for i, new in new_ids(keys, taken)}


def new_ids(keys, taken: set) -> list[tuple[int, str]]:
    """(position, new id) for (source, id) keys sorted so that equal keys are adjacent, in their stable order: the
    first of each keeps its id, the k-th becomes `id#k` (or the next `id#n` no input id already has). `taken`
    holds every (source, id) in use and grows with the new ones."""
    out, previous, k = [], None, 0
    for i, (source, rid) in enumerate(keys):
        k = k + 1 if (source, rid) == previous else 1
        previous = (source, rid)
        if k == 1:
            continue  # the first keeps its id
        n, new = k, f"{rid}#{k}"
        while (source, new) in taken:  # an input id that already looks like this one
            n += 1
            new = f"{rid}#{n}"
        taken.add((source, new))
        out.append((i, new))
    return out


def find_duplicates(table: pa.Table, shard_order: dict[str, int]) -> pa.Table:
    """(shard, row, record, new_id, duplicate_of) of the records that are renamed or are duplicates."""
    if table.num_rows == 0:
        return FIX_SCHEMA.empty_table()
    ranked = _ranked(table, shard_order)
    renames = _renames(ranked)
    first = ranked.group_by("content_hash").aggregate([("rank", "min")]).rename_columns(["content_hash", "first"])
    ranked = ranked.join(first, "content_hash")
    final_id = {r: renames.get(r, i) for r, i in zip(ranked.column("rank").to_pylist(), ranked.column("id").to_pylist())}
    out = []
    for s, r, k, rank, f in zip(*(ranked.column(c).to_pylist() for c in ("shard", "row", "record", "rank", "first"))):
        if rank in renames or rank != f:
            out.append({"shard": s, "row": r, "record": k, "new_id": renames.get(rank),
                        "duplicate_of": final_id[f] if rank != f else None})
    return pa.Table.from_pylist(out, schema=FIX_SCHEMA)


def apply_fixes(table: pa.Table, fixes: pa.Table | None) -> pa.Table:
    """The table with renamed ids (the input's id in `input_id`) and `duplicate_of` set; the row order kept."""
    n = table.num_rows
    if fixes is None or fixes.num_rows == 0:
        return table.append_column("input_id", pa.nulls(n, pa.string())).append_column(
            "duplicate_of", pa.nulls(n, pa.string()))
    position = table.select(["shard", "row", "record"]).append_column("position", pa.array(np.arange(n)))
    joined = position.join(fixes, ["shard", "row", "record"], join_type="left outer").sort_by("position")
    new_id = joined.column("new_id")
    renamed = pc.is_valid(new_id)
    ids = pc.if_else(renamed, new_id, table.column("id"))
    out = table.set_column(table.schema.get_field_index("id"), "id", ids)
    out = out.append_column("input_id", pc.if_else(renamed, table.column("id"), pa.nulls(n, pa.string())))
    return out.append_column("duplicate_of", joined.column("duplicate_of").combine_chunks())
