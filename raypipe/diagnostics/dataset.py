"""Reading trajectories for the diagnostic jobs (into Ray Data, or Arrow tables in process): one load task per input file, every row kept.

Rows that cannot be read or normalised come through as rows with `error` set (source `(unreadable)`), so the
per-trajectory outputs always hold one row per input row.
"""
from __future__ import annotations

import pyarrow as pa

from raypipe.core import io
from raypipe.diagnostics.inputs import SCHEMA, load_records
from raypipe.core.errors import LayoutError

LOADED_SCHEMA = SCHEMA.append(pa.field("error", pa.string()))
UNREADABLE = "(unreadable)"


def load_file(uri: str, storage: io.Storage) -> pa.Table:
    try:
        records, rejects = load_records(uri, storage)
    except LayoutError as e:  # a file of some other kind: every row is reported, none is lost
        bad = [{"shard": uri, "row": r.index, "reason": str(e)} for r in io.iter_raw_rows(uri, storage)]
        records, rejects = SCHEMA.empty_table(), pa.Table.from_pylist(bad)
    records = records.append_column("error", pa.nulls(records.num_rows, pa.string()))
    if not rejects.num_rows:
        return records
    bad = [{"id": f"{r['shard']}#{r['row']}", "source": UNREADABLE, "problem_id": None, "problem": "",
            "thinking": "", "final": "", "branch_ratio": None, "error": r["reason"]}
           for r in rejects.to_pylist()]
    return pa.concat_tables([records, pa.Table.from_pylist(bad, schema=LOADED_SCHEMA)])


def _load_batch(batch: dict, storage: io.Storage) -> pa.Table:
    return pa.concat_tables([load_file(str(u), storage) for u in batch["uri"]])


def read_trajectories(uris: list[str], storage: io.Storage, limit: int | None = None, ex=None):
    """The trajectories of the input files `uris` (list_diagnostic_inputs: listed before a job starts Ray, so a
    missing input fails at once) as `ex`'s dataset (a Ray Dataset by default), in input order; `limit` keeps the
    first rows."""
    from raypipe.executor import RayExecutor

    ex = ex or RayExecutor()
    ds = ex.read(_load_batch, [{"uri": u} for u in uris], storage=storage)
    return ex.limit(ds, limit) if limit else ds
