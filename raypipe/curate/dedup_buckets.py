"""Duplicates and shared ids as a hash-partitioned group-by: the same fixes as `dedup.find_duplicates`, with no
step that sees every record's keys.

1. per chunk, `partition_chunk` splits the key columns two ways: by a hash of `content_hash` (exact duplicates)
   and by a hash of (source, id) (shared ids). An id that looks like `base#n` is also sent, as a candidate, to the
   bucket of (source, base): a renamed id `base#k` can only collide with such an input id (a generated `X#n`
   equals a generated `Y#m` only when X == Y and n == m, so renames of different ids never collide).
2. per id bucket, `bucket_renames` gives the renamed records, exactly as find_duplicates' loop does: they are
   routed on to the content bucket of their `content_hash`.
3. per content bucket, `bucket_fixes` gives each changed record's (new_id, duplicate_of), `duplicate_of` being the
   final id of the first copy, which lies in the same content bucket.
The stable order is the same: input file order, then row, then record.

Pure pyarrow/Python; raypipe.curate.phase2 runs the steps as Ray tasks, `fixes_in_process` runs them here.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.curate.dedup import FIX_SCHEMA, KEY_COLUMNS, new_ids

ROW_SCHEMA = pa.schema([("shard", pa.string()), ("row", pa.int64()), ("record", pa.int64()),
                        ("source", pa.string()), ("id", pa.string()), ("content_hash", pa.string()),
                        ("chunk", pa.int64()), ("order", pa.int64()), ("candidate", pa.bool_())])
RENAME_SCHEMA = pa.schema([("shard", pa.string()), ("row", pa.int64()), ("record", pa.int64()),
                           ("content_hash", pa.string()), ("new_id", pa.string())])
CHUNK_FIX_SCHEMA = pa.schema([("chunk", pa.int64()), *FIX_SCHEMA])
_NUMBERED = re.compile(r"^(.*)#([0-9]+)$", re.S)


def _bucket(parts: list[str], buckets: int) -> int:
    return zlib.crc32("\x1f".join(parts).encode("utf-8", "surrogatepass")) % buckets


def _split(table: pa.Table, bucket: np.ndarray, buckets: int) -> list[pa.Table]:
    return [table.filter(pa.array(bucket == b)) for b in range(buckets)]


def partition_chunk(keys: pa.Table, chunk: int, shard_order: dict[str, int],
                    buckets: int) -> tuple[list[pa.Table], list[pa.Table]]:
    """(parts by content bucket, parts by id bucket) of one chunk's key columns, in ROW_SCHEMA."""
    n = keys.num_rows
    shards = keys.column("shard").to_pylist()
    order = [shard_order.get(s, len(shard_order)) for s in shards]
    rows = pa.Table.from_arrays(
        [keys.column(c).combine_chunks().cast(ROW_SCHEMA.field(c).type) for c in KEY_COLUMNS]
        + [pa.array(np.full(n, chunk, np.int64)), pa.array(order, pa.int64()), pa.array(np.zeros(n, bool))],
        schema=ROW_SCHEMA)
    sources, ids = rows.column("source").to_pylist(), rows.column("id").to_pylist()
    if buckets == 1:  # one bucket: every row is in it
        by_content = by_id = np.zeros(n, np.int64)
        hashed = np.nonzero(pc.match_substring(rows.column("id"), "#").to_numpy(zero_copy_only=False))[0]
        cand_idx = [int(j) for j in hashed if _NUMBERED.match(ids[j])]
        cand_bucket = [0] * len(cand_idx)
    else:
        by_content = np.fromiter((_bucket([h], buckets) for h in rows.column("content_hash").to_pylist()),
                                 np.int64, count=n)
        by_id = np.fromiter((_bucket([s, i], buckets) for s, i in zip(sources, ids)), np.int64, count=n)
        cand_idx, cand_bucket = [], []
        for j, (s, i) in enumerate(zip(sources, ids)):
            m = _NUMBERED.match(i)
            if m:
                cand_idx.append(j)
                cand_bucket.append(_bucket([s, m.group(1)], buckets))
    if cand_idx:
        cands = rows.take(pa.array(cand_idx, pa.int64()))
        cands = cands.set_column(ROW_SCHEMA.get_field_index("candidate"), "candidate",
                                 pa.array(np.ones(len(cand_idx), bool)))
        id_rows = pa.concat_tables([rows, cands])
        by_id = np.concatenate([by_id, np.array(cand_bucket, np.int64)])
    else:
        id_rows = rows
    return _split(rows, by_content, buckets), _split(id_rows, by_id, buckets)


def bucket_renames(rows: pa.Table) -> pa.Table:
    """The renamed records of one id bucket (RENAME_SCHEMA): the k-th of a shared (source, id) becomes `id#k`."""
    taken = set(zip(rows.column("source").to_pylist(), rows.column("id").to_pylist()))
    real = rows.filter(pc.invert(rows.column("candidate")))
    shared = real.group_by(["source", "id"]).aggregate([("row", "count")])
    shared = shared.filter(pc.greater(shared.column("row_count"), 1)).select(["source", "id"])
    if shared.num_rows == 0:
        return RENAME_SCHEMA.empty_table()
    clash = real.join(shared, ["source", "id"], join_type="inner").sort_by(
        [("source", "ascending"), ("id", "ascending"), ("order", "ascending"), ("row", "ascending"),
         ("record", "ascending")])
    rows = list(zip(*(clash.column(c).to_pylist() for c in ("shard", "row", "record", "content_hash"))))
    keys = zip(clash.column("source").to_pylist(), clash.column("id").to_pylist())
    out = [(*rows[i], new) for i, new in new_ids(keys, taken)]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(zip(*out), RENAME_SCHEMA)],
                                schema=RENAME_SCHEMA)


def bucket_fixes(rows: pa.Table, renames: pa.Table) -> pa.Table:
    """The fixes of one content bucket (CHUNK_FIX_SCHEMA): renamed records and all but the first of each copy."""
    renamed = {(s, r, k): new for s, r, k, new in zip(*(renames.column(c).to_pylist()
                                                        for c in ("shard", "row", "record", "new_id")))}
    rows = rows.sort_by([("content_hash", "ascending"), ("order", "ascending"), ("row", "ascending"),
                         ("record", "ascending")])
    out: dict[str, list] = {f.name: [] for f in CHUNK_FIX_SCHEMA}
    previous, first_id = None, None
    cols = ("content_hash", "chunk", "shard", "row", "record", "id")
    for ch, chunk, shard, row, record, rid in zip(*(rows.column(c).to_pylist() for c in cols)):
        new = renamed.get((shard, row, record))
        duplicate_of = None
        if ch != previous:
            previous, first_id = ch, new if new is not None else rid
        else:
            duplicate_of = first_id
        if new is not None or duplicate_of is not None:
            for name, v in zip(out, (chunk, shard, row, record, new, duplicate_of)):
                out[name].append(v)
    return pa.table(out, schema=CHUNK_FIX_SCHEMA)


def route_renames(renames: pa.Table, buckets: int) -> list[pa.Table]:
    """Renamed records to the content bucket of their content_hash."""
    b = np.fromiter((_bucket([h], buckets) for h in renames.column("content_hash").to_pylist()), np.int64,
                    count=renames.num_rows)
    return _split(renames, b, buckets)


def chunk_fix_files(fixes: pa.Table) -> dict[int, pa.Table]:
    """{chunk: its fixes file (FIX_SCHEMA, by row then record)} for the chunks that have fixes."""
    out = {}
    for chunk in sorted(set(fixes.column("chunk").to_pylist())):
        part = fixes.filter(pc.equal(fixes.column("chunk"), chunk))
        out[chunk] = part.sort_by([("row", "ascending"), ("record", "ascending")]).select(FIX_SCHEMA.names)
    return out


def fixes_in_process(tables: list[pa.Table], shard_order: dict[str, int], buckets: int = 4) -> dict[int, pa.Table]:
    """All steps here, over the chunks' key tables (chunk = index in `tables`): {chunk: fixes}."""
    by_content: list[list[pa.Table]] = [[] for _ in range(buckets)]
    by_id: list[list[pa.Table]] = [[] for _ in range(buckets)]
    for chunk, keys in enumerate(tables):
        content, ids = partition_chunk(keys, chunk, shard_order, buckets)
        for b in range(buckets):
            by_content[b].append(content[b])
            by_id[b].append(ids[b])
    routed: list[list[pa.Table]] = [[] for _ in range(buckets)]
    for b in range(buckets):
        for c, part in enumerate(route_renames(bucket_renames(pa.concat_tables(by_id[b])), buckets)):
            routed[c].append(part)
    fixes = [bucket_fixes(pa.concat_tables(by_content[b]), pa.concat_tables(routed[b])) for b in range(buckets)]
    return chunk_fix_files(pa.concat_tables(fixes))
