"""One input shard to normalised records and rejects (no Ray here: the pipeline runs this inside actors)."""
from __future__ import annotations

import json
import posixpath
from collections import Counter

import pyarrow as pa

from raypipe.io import RawRow, Storage, iter_raw_rows
from raypipe.schema import (
    LayoutError,
    RowError,
    detect_layout,
    dominant_markup,
    normalize_row,
    records_table,
    rejects_table,
)

MAX_RESPONSE_CHARS = 16 << 20


def _raw_text(r: RawRow) -> str:
    if r.raw:
        return r.raw
    return json.dumps(r.value, ensure_ascii=False, default=str)


def file_layout(rows: list[RawRow], uri: str) -> str | None:
    """The layout most rows of a file follow; None when no row parsed; LayoutError when none is known."""
    votes: Counter = Counter()
    seen_keys: Counter = Counter()
    for r in rows:
        if isinstance(r.value, dict):
            seen_keys.update(r.value.keys())
            try:
                votes[detect_layout(r.value.keys())] += 1
            except LayoutError:
                pass
    if votes:
        return votes.most_common(1)[0][0]
    if not seen_keys:
        return None
    try:
        detect_layout(seen_keys)
    except LayoutError as e:
        raise LayoutError(f"{uri}: {e}") from None
    return None


def load_shard(uri: str, storage: Storage, max_response_chars: int = MAX_RESPONSE_CHARS) -> tuple[pa.Table, pa.Table, int]:
    """(records, rejects, input row count) for one input file."""
    rows = list(iter_raw_rows(uri, storage))
    layout = file_layout(rows, uri)
    default_source = posixpath.basename(uri).split(".")[0]
    good, bad = [], []
    for r in rows:
        if r.error:
            bad.append({"shard": uri, "row": r.index, "raw": _raw_text(r), "reason": r.error})
            continue
        try:
            if layout is None:
                raise RowError("record is not an object")
            rec = normalize_row(r.value, layout, default_source, uri, r.index)
            if len(rec["response"]) > max_response_chars:
                raise RowError(f"response of {len(rec['response'])} chars is over the limit of {max_response_chars}")
            good.append(rec)
        except RowError as e:
            bad.append({"shard": uri, "row": r.index, "raw": _raw_text(r), "reason": f"invalid record: {e}"})
    # A response without markup from a source whose other responses use markup never closed its reasoning.
    markup = dominant_markup(good)
    if markup:
        by_index = {r.index: r for r in rows}
        good = [normalize_row(by_index[g["row"]].value, layout, default_source, uri, g["row"], markup)
                if g["markup"] == "plain" and g["source"] in markup else g for g in good]
    return records_table(good), rejects_table(bad), len(rows)
