"""Input files as units of work (no Ray here): newline-aligned byte ranges of uncompressed JSONL, row-group ranges
of Parquet, and whole compressed files streamed. Each chunk has a stable key and the row number it starts at, and
is read one bounded block at a time, so no worker holds a file and one big file spreads over every actor.

A JSONL chunk owns the lines that start inside its byte range [start, end); its first row number is the number of
newlines before its first line, which `count_newlines` finds for every range of a file in parallel (a pass at
memory speed, cached under _work/index/). Row numbers count every line, blank ones included: a chunk's `first_row`
is the number of lines of its file before it, and its rows are numbered from first_row + 1 as an editor shows them.

A compressed stream that stops decoding part-way (cut short, or corrupt) yields its whole lines up to there and then
a `Cut`: what was read is kept, and the rest of the file is one reject.
"""
from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.core.io import Storage, compression_of, retried, shard_key

READ_BYTES = 8 << 20  # one read from storage
STREAM_READ = 4096  # decoded bytes per read of a compressed stream: a stream cut short loses at most this much
DECODE_ERRORS = ("Truncated compressed stream", "inflate failed", "decompress failed")  # pyarrow's, gzip and zstd


@dataclass(frozen=True)
class Chunk:
    uri: str
    key: str  # stable: names the chunk's completion marker and its part files
    # lines (a byte range of JSONL) | row_groups (Parquet) | stream (compressed JSONL, whole) | unusable (a file
    # found unusable before any work, rejected as a whole: --skip-unreadable)
    kind: str
    start: int  # byte offset, or first row group
    end: int  # byte offset or row group, exclusive
    first_row: int  # rows (lines) of its file before the chunk's first; -1 until the line index is known
    nbytes: int  # input bytes of the chunk (compressed size for a stream, row groups' size for Parquet)
    order: int  # the file's position in the input order
    reason: str = ""  # why an unusable file is rejected

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cut:
    """Where a compressed stream stopped decoding: the bytes after its last whole line, and the decoder's error."""

    tail: bytes
    error: str

    def reason(self, rows: int) -> str:
        if "Truncated" in self.error:
            return f"truncated compressed stream after row {rows}"
        return f"corrupt compressed stream after row {rows}: {self.error}"


def plan_chunks(files: list[tuple[str, int]], storage: Storage, chunk_bytes: int,
                footers: dict[str, pq.FileMetaData] | None = None,
                unusable: dict[str, str] | None = None) -> list[Chunk]:
    """The chunks of (uri, size) input files, in input order. A file that fits one chunk keeps its shard key.
    `footers`: the Parquet footers already read (raypipe.curate.precheck); `unusable`: files to reject as a whole
    (uri -> reason), one chunk each under a key of their own (a file repaired later is scored afresh)."""
    chunks: list[Chunk] = []
    footers, unusable = footers or {}, unusable or {}
    for order, (uri, size) in enumerate(files):
        base = shard_key(uri)
        if uri in unusable:
            chunks.append(Chunk(uri, f"{base}.unusable", "unusable", 0, 0, 0, size, order, unusable[uri]))
        elif uri.endswith(".parquet"):
            meta = footers.get(uri)
            if meta is None:
                fs, path = storage.filesystem(uri)
                meta = pq.ParquetFile(path, filesystem=fs).metadata
            groups, row, group_start, acc, first = [], 0, 0, 0, 0
            for g in range(meta.num_row_groups):
                if acc and acc + meta.row_group(g).total_byte_size > chunk_bytes:
                    groups.append((group_start, g, first, acc))
                    group_start, first, acc = g, row, 0
                acc += meta.row_group(g).total_byte_size
                row += meta.row_group(g).num_rows
            groups.append((group_start, max(meta.num_row_groups, group_start + 1), first, acc))
            for i, (a, b, first, n) in enumerate(groups):
                key = base if len(groups) == 1 else f"{base}.{i:05d}"
                chunks.append(Chunk(uri, key, "row_groups", a, b, first, n, order))
        elif compression_of(uri) is not None or size <= chunk_bytes:
            kind = "stream" if compression_of(uri) is not None else "lines"
            chunks.append(Chunk(uri, base, kind, 0, size, 0, size, order))
        else:
            n = -(-size // chunk_bytes)
            for i in range(n):
                a, b = i * chunk_bytes, min(size, (i + 1) * chunk_bytes)
                chunks.append(Chunk(uri, f"{base}.{i:05d}", "lines", a, b, 0 if i == 0 else -1, b - a, order))
    return chunks


def count_newlines(uri: str, start: int, end: int, storage: Storage) -> tuple[int, bool]:
    """(newlines in bytes [start, end) of a file, whether byte end-1 is a newline)."""
    fs, path = storage.filesystem(uri)
    count, last = 0, b""
    with fs.open_input_file(path) as f:
        pos = start
        while pos < end:
            data = retried(f.read_at, min(READ_BYTES, end - pos), pos)
            if not data:
                break
            count += data.count(b"\n")
            last = data[-1:]
            pos += len(data)
    return count, last == b"\n"


def first_rows(chunks: list[Chunk], counts: dict[str, tuple[int, bool]]) -> list[Chunk]:
    """The chunks with every first_row filled in from the newline counts of each byte range (by chunk key)."""
    out, before, prev_nl = [], {}, {}
    for c in chunks:
        if c.kind == "lines" and c.first_row < 0:
            # newlines in [0, start - 1), plus the one that ends the line running into this range
            n = before[c.uri] - (1 if prev_nl[c.uri] else 0) + 1
            c = Chunk(c.uri, c.key, c.kind, c.start, c.end, n, c.nbytes, c.order)
        if c.key in counts:
            before[c.uri] = before.get(c.uri, 0) + counts[c.key][0]
            prev_nl[c.uri] = counts[c.key][1]
        out.append(c)
    return out


def needs_index(chunks: list[Chunk]) -> list[Chunk]:
    """The byte ranges whose newline counts place the chunks after them: every range of a split JSONL file but its
    last."""
    split = {c.uri for c in chunks if c.kind == "lines" and c.first_row < 0}
    last = {c.uri: c.key for c in chunks if c.uri in split}
    return [c for c in chunks if c.uri in split and c.key != last[c.uri]]


def iter_blocks(chunk: Chunk, storage: Storage, block_bytes: int) -> Iterator[tuple[bytes | pa.Table | Cut, int]]:
    """(block, rows of the file before it): whole lines of JSONL (bytes) or a Parquet record batch (as a table),
    about block_bytes each; the chunk's rows and no others; last, a Cut where a compressed stream stopped decoding.
    An unusable file has none."""
    if chunk.kind == "unusable":
        return
    fs, path = storage.filesystem(chunk.uri)
    if chunk.kind == "row_groups":
        pf = pq.ParquetFile(path, filesystem=fs)
        groups = list(range(chunk.start, min(chunk.end, pf.metadata.num_row_groups)))
        rows = sum(pf.metadata.row_group(g).num_rows for g in groups)
        size = sum(pf.metadata.row_group(g).total_byte_size for g in groups)
        per_batch = max(1, int(rows * block_bytes / size)) if size else max(1, rows)
        row = chunk.first_row
        for batch in pf.iter_batches(batch_size=per_batch, row_groups=groups):
            yield pa.Table.from_batches([batch]), row
            row += batch.num_rows
        return
    if chunk.kind == "stream":
        with fs.open_input_stream(path, compression=compression_of(chunk.uri)) as f:
            yield from _numbered(_stream_lines(f, block_bytes), chunk.first_row)
        return
    with fs.open_input_file(path) as f:
        yield from _numbered(_range_lines(f, f.size(), chunk.start, chunk.end, block_bytes), chunk.first_row)


def _numbered(blocks: Iterator[bytes | Cut], row: int) -> Iterator[tuple[bytes | Cut, int]]:
    for block in blocks:
        yield block, row
        if not isinstance(block, Cut):
            row += block.count(b"\n")


def _stream_lines(f, block_bytes: int) -> Iterator[bytes | Cut]:
    """Whole lines of a decoded stream, about block_bytes at a time, read in small pieces so that a stream that
    stops decoding gives up little of what came before; then a Cut if it did."""
    pieces, held, carry = [], 0, b""
    while True:
        try:
            data = f.read(STREAM_READ)
        except OSError as e:
            if not any(m in str(e) for m in DECODE_ERRORS):
                raise  # a storage error: the chunk again from its start
            buf = carry + b"".join(pieces)
            cut = buf.rfind(b"\n") + 1
            if cut:
                yield buf[:cut]
            yield Cut(buf[cut:], str(e))
            return
        if data:
            pieces.append(data)
            held += len(data)
        if held >= block_bytes or not data:
            buf = carry + b"".join(pieces)
            pieces, held = [], 0
            cut = buf.rfind(b"\n") + 1 if data else len(buf)
            if cut:
                yield buf[:cut]
            carry = buf[cut:]
        if not data:
            return


def _range_lines(f, size: int, start: int, end: int, block_bytes: int) -> Iterator[bytes]:
    """Whole lines that start in [start, end): the first begins after the newline at or after start - 1."""
    if start > 0:
        nl = _find_newline(f, size, start - 1)
        if nl < 0:
            return
        start = nl + 1
    offset, pos, buf = start, start, b""  # buf holds the file's bytes from `offset` on
    while offset < end:
        if pos < size:
            data = retried(f.read_at, min(block_bytes, size - pos), pos)
            pos += len(data)
            buf += data
        at_eof = pos >= size
        limit = end - offset  # lines starting before buf[limit] are this chunk's
        nl = buf.find(b"\n", limit - 1) if limit <= len(buf) else -1
        if nl >= 0 or (at_eof and limit <= len(buf)):
            owned = buf[:nl + 1] if nl >= 0 else buf
            if owned:
                yield owned
            return
        cut = len(buf) if at_eof else buf.rfind(b"\n") + 1
        if cut:
            yield buf[:cut]
            buf, offset = buf[cut:], offset + cut
        if at_eof:
            return


def _find_newline(f, size: int, pos: int) -> int:
    while pos < size:
        data = retried(f.read_at, min(1 << 20, size - pos), pos)
        at = data.find(b"\n")
        if at >= 0:
            return pos + at
        pos += len(data)
    return -1
