"""Curated-like SFT data built from the shared real trajectories (the curation job's record schema)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.core.formats import normalize_row
from raypipe.core.schema import records_table

FILES = {"skyt1_math-correct-5K-27B_math500.jsonl": "sky-27b", "skyt1_math-correct-5K-14B_amc23.jsonl": "sky-14b"}


def real_records(trajectories: Path, per_source: int, max_chars: int) -> list[dict]:
    """The shortest `per_source` real trajectories of two sources (so a tiny model overfits them quickly)."""
    out = []
    for name, source in FILES.items():
        rows = [json.loads(line) for line in (trajectories / name).read_text().splitlines() if line.strip()]
        rows = sorted((r for r in rows if len(r["response"]) <= max_chars), key=lambda r: (len(r["response"]), r["id"]))
        for i, r in enumerate(rows[:per_source]):
            r = {**r, "source": source}
            out.append(normalize_row(r, "flat", source, name, i))
    return out


def write_curated(out_dir: Path, records: list[dict], legacy: bool = False) -> Path:
    """A curation-style output folder: curated/part-0.parquet with decision=keep (legacy: as curation wrote it before
    the canonical `thinking` and `final` columns)."""
    table = records_table(records)
    if legacy:
        table = table.drop_columns(["thinking", "final"])
    table = table.append_column("decision", pa.array(["keep"] * table.num_rows))
    (out_dir / "curated").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "curated" / "part-0.parquet")
    return out_dir
