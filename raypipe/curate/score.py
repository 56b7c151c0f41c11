"""Phase 1 of the curation job: score one chunk of input, one bounded block at a time (the ScoreChunk stage).

The scored records stream into `_work/scored/part-<key>.parquet` (a row group per scoring batch), the rows that
cannot be read into `rejects/part-<key>.parquet`; then the chunk's completion marker `_work/done/<key>.json`
(datatrove style) with its counts. A worker holds one block of a chunk, never the file.

Damage is a reject, not a failure, where the rest can still be used: a compressed stream that stops decoding keeps
the rows before the cut and gives one reject for the rest; with --skip-unreadable, a file found unusable before
the run is one reject (row null), and a block whose fields fit no format gives one reject per row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.core.blank_steps import value_offsets
from raypipe.core.errors import LayoutError
from raypipe.core.formats import InputFormat, make_format
from raypipe.core.reasons import reject_kind
from raypipe.core.registry import load_plugins
from raypipe.core.schema import records_table, rejects_table
from raypipe.core.scoring import Scorer
from raypipe.core.stage import Resources, Stage
from raypipe.curate.chunks import Chunk, Cut, iter_blocks
from raypipe.curate.config import CurateConfig
from raypipe.curate.markup import votes
from raypipe.curate.shard import load_block, rejected_block


def scored_uri(output: str, key: str) -> str:
    return io.join(output, "_work", "scored", f"part-{key}.parquet")


def marker_uri(output: str, key: str) -> str:
    return io.join(output, "_work", "done", f"{key}.json")


class ScoreChunk(Stage):
    """Phase 1 as a stage: a chunk (Chunk.to_dict) in, its counts out; one Scorer and its verifier workers per copy."""

    name = "score"
    reads = tuple(Chunk.__dataclass_fields__)
    writes = ("key", "nbytes", "records", "markups", "error")

    def __init__(self, config: CurateConfig):
        self.config = config
        self.resources = Resources(cpus=1.0, worker_processes=config.verify_workers, worker_cpus=config.verifier_cpus)

    def setup(self) -> None:
        load_plugins(self.config.plugins)  # the run's own formats, proxies and graders, in this process too
        self.storage = self.config.storage()
        self.scorer = Scorer(self.config.scoring()).setup()
        self.fmt = make_format(self.config.format, self.config.fields)

    def process(self, item: dict) -> dict:
        chunk = Chunk(**{f.name: (str if f.type == "str" else int)(item[f.name]) for f in dataclasses.fields(Chunk)})
        out = {"key": chunk.key, "nbytes": chunk.nbytes, "error": "", "records": 0, "markups": "{}"}
        try:
            # a storage error mid-chunk: the chunk again, from its start (it rewrites the same files)
            stats = io.retried(score_chunk, chunk, self.config, self.storage, self.scorer, self.fmt, attempts=3)
            out.update(records=stats["records"], markups=json.dumps(stats["markups"]))
        except LayoutError as e:  # a block of the file is unusable: reported to the driver, which stops the job
            out["error"] = str(e)
        return out

    def teardown(self) -> None:
        self.scorer.close()


def score_chunk(chunk: Chunk, config: CurateConfig, storage: io.Storage, scorer: Scorer,
                fmt: InputFormat | None = None) -> dict:
    t0 = time.perf_counter()
    scored_out = io.ParquetStream(scored_uri(config.output, chunk.key), storage)
    rejects_out = io.ParquetStream(io.join(config.output, "rejects", f"part-{chunk.key}.parquet"), storage)
    rows = response_bytes = 0
    per_row: Counter = Counter()  # records a row gave -> rows that gave that many
    markups: dict[str, Counter] = {}  # source -> markup -> records (raypipe.curate.markup)
    rejected_reasons: Counter = Counter()  # the kind of a reject's reason -> rejects
    damage = []  # what made whole parts of the file rejects
    if chunk.kind == "unusable":
        damage.append(chunk.reason)
        whole = rejects_table([{"shard": chunk.uri, "row": None, "raw": "", "reason": f"whole file: {chunk.reason}"}])
        rejected_reasons.update(reject_kind(r) for r in whole.column("reason").to_pylist())
        rejects_out.write(as_rejected(whole))
    for block, rows_before in _read(chunk, storage, config.block_mb << 20):
        if isinstance(block, Cut):  # the rest of the stream: one reject, as the row after the last one read
            damage.append(block.reason(rows_before))
            records, n_rows = records_table([]), 1
            rejects = rejects_table([{"shard": chunk.uri, "row": rows_before + 1, "reason": damage[-1],
                                      "raw": block.tail.decode("utf-8", "replace")}])
        else:
            try:
                records, rejects, n_rows = load_block(chunk.uri, block, rows_before, config.max_response_chars, fmt)
            except LayoutError as e:
                if not config.skip_unreadable:
                    raise
                damage.append(str(e).removeprefix(f"{chunk.uri}: "))
                records, rejects, n_rows = rejected_block(chunk.uri, block, rows_before, damage[-1])
        rows += n_rows
        per_row.update(Counter(records_per_row(records, rejects).values()))
        response_bytes += int(pc.sum(pc.binary_length(records.column("response"))).as_py() or 0)
        for i in range(0, records.num_rows, config.batch_rows):
            scored_out.write(finish(scorer.score(records.slice(i, config.batch_rows))))
        for source, counts in votes(records).items():
            for markup, n in counts.items():
                markups.setdefault(source, Counter())[markup] += n
        if rejects.num_rows:
            rejected_reasons.update(reject_kind(r) for r in rejects.column("reason").to_pylist())
            rejects_out.write(as_rejected(rejects))
    if scored_out.rows == 0:  # phases 2 and 3 read every chunk's scored part, empty or not
        scored_out.write(finish(scorer.score(records_table([]))))
    n_scored = scored_out.close()
    n_rejected = rejects_out.close()
    stats = {"uri": chunk.uri, "key": chunk.key, "start": chunk.start, "end": chunk.end, "first_row": chunk.first_row,
             "rows": rows, "records": n_scored + n_rejected, "rejected": n_rejected,
             "rejected_reasons": dict(sorted(rejected_reasons.items())),
             "records_per_row": {str(k): n for k, n in sorted(per_row.items())},
             "markups": {s: dict(c) for s, c in sorted(markups.items())}, "bytes": response_bytes,
             "input_bytes": chunk.nbytes, "seconds": time.perf_counter() - t0, "damage": damage}
    io.write_text(json.dumps(stats), marker_uri(config.output, chunk.key), storage)
    return stats


def as_rejected(rejects: pa.Table) -> pa.Table:
    return rejects.append_column("decision", pa.array(["reject"] * rejects.num_rows, pa.string()))


def _read(chunk: Chunk, storage: io.Storage, block_bytes: int):
    """The chunk's blocks; a storage error names the file (the job reports it and stops)."""
    blocks = iter_blocks(chunk, storage, block_bytes)
    while True:
        try:
            yield next(blocks)
        except StopIteration:
            return
        except OSError as e:
            raise OSError(f"cannot read {chunk.uri}: {e}") from e


def finish(scored: pa.Table) -> pa.Table:
    scored = scored.append_column("content_hash", content_hashes(scored))
    return scored.append_column("unconsumed_text", unconsumed_text(scored.column("meta")))


def content_hashes(scored: pa.Table) -> pa.Array:
    """What makes two records the same trajectory: source, problem and response. The digest is
    stable_hash(source, problem, response), fed from the columns' UTF-8 buffers without a str per value."""
    (sd, so), (pd, po), (rd, ro) = (_utf8_spans(scored.column(c)) for c in ("source", "problem", "response"))
    sep, blake2b = b"\x1f", hashlib.blake2b
    return pa.array([blake2b(b"".join((sd[so[i]:so[i + 1]], sep, pd[po[i]:po[i + 1]], sep, rd[ro[i]:ro[i + 1]], sep)),
                             digest_size=16).hexdigest() for i in range(scored.num_rows)], pa.string())


def _utf8_spans(column: pa.ChunkedArray) -> tuple[memoryview, list[int]]:
    """(data buffer, value offsets) of a string column without nulls (the record schema's) as one array."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return memoryview(arr.buffers()[2] or b""), value_offsets(arr).tolist()


def unconsumed_text(meta: pa.ChunkedArray) -> pa.Array:
    """Per record, the fields its format left unread that hold text (comma-separated), else null."""
    out = []
    for m in meta.to_pylist():
        fields = [k for k, v in json.loads(m).items() if isinstance(v, str) and v.strip()] if m and m != "{}" else []
        out.append(",".join(fields) or None)
    return pa.array(out, pa.string())


def records_per_row(records: pa.Table, rejects: pa.Table) -> Counter:
    """{row: records it gave}; a row rejected as a whole gave one (its reject). Rows never span blocks."""
    return Counter(records.column("row").to_pylist() + rejects.column("row").to_pylist())
