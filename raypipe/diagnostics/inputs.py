"""Trajectories for the diagnostics: any input `raypipe curate` reads, or a curation output folder."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.core.schema import rejects_table
from raypipe.curate.shard import load_shard
from raypipe.train.render import parts_from_response

# The diagnostics read the canonical reasoning and final part, whatever markup or field they came from.
COLUMNS = ["id", "source", "problem_id", "problem", "thinking", "final", "branch_ratio"]
SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("problem_id", pa.string()),
                    ("problem", pa.string()), ("thinking", pa.string()), ("final", pa.string()),
                    ("branch_ratio", pa.float64())])
CURATED_PARTS = ("curated", "dropped")


def list_diagnostic_inputs(uri: str, storage: io.Storage) -> list[str]:
    """Input files; for a curation output folder (it has manifest.json), its curated/ and dropped/ Parquet."""
    if io.exists(io.join(uri, "manifest.json"), storage):
        found: list[str] = []
        for part in CURATED_PARTS:
            if io.exists(io.join(uri, part), storage):
                found += io.list_inputs(io.join(uri, part), storage)
        if not found:
            raise FileNotFoundError(f"{uri} is a curation output without curated/ or dropped/ rows")
        return found
    return io.list_inputs(uri, storage)


def load_records(uri: str, storage: io.Storage) -> tuple[pa.Table, pa.Table]:
    """(records with COLUMNS, rejected rows with their reason) for one file. Curated rows keep the curation job's
    thinking, final and branch_ratio; raw rows are normalised by the input formats as curation does (branch_ratio
    left null)."""
    if uri.endswith(".parquet"):
        fs, path = storage.filesystem(uri)
        names = set(pq.read_schema(path, filesystem=fs).names)
        if {"response", "problem_id"} <= names and names & {"thinking", "thinking_start"}:  # curated records
            legacy = not {"thinking", "final"} <= names  # curated before the canonical columns: split the response
            extra = ["response", "markup"] if legacy else []
            t = pq.read_table(path, filesystem=fs, columns=[c for c in COLUMNS + extra if c in names])
            if legacy:
                markups = t.column("markup").to_pylist() if "markup" in names else [None] * t.num_rows
                parts = [parts_from_response(r, m) for r, m in zip(t.column("response").to_pylist(), markups)]
                t = t.append_column("thinking", pa.array([p[0] for p in parts], pa.string()))
                t = t.append_column("final", pa.array([p[1] for p in parts], pa.string()))
            if "branch_ratio" not in t.column_names:
                t = t.append_column("branch_ratio", pa.nulls(t.num_rows, pa.float64()))
            return t.select(COLUMNS).cast(SCHEMA), rejects_table([])
    records, rejects, _ = load_shard(uri, storage)
    t = records.append_column("branch_ratio", pa.nulls(records.num_rows, pa.float64()))
    return t.select(COLUMNS).cast(SCHEMA), rejects


def thinking_of(row: dict) -> str:
    """The canonical reasoning of a loaded row (SCHEMA)."""
    return row["thinking"] or ""
