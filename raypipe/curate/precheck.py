"""Before any work (no Ray here): what each input file shows cheaply. Parquet files by their footer (read once and
handed to the planner), JSONL by its first rows (a few KB, a whole line at least): a file that cannot be read, or
whose fields fit no format, is found before phase 1 starts, named with its fix on one line, or rejected as a whole.

Bounded: the checks run in threads, each reads a bounded amount, and first-row checks still running after
DEADLINE_S are left to phase 1, which checks every block it reads anyway.
"""
from __future__ import annotations

import posixpath
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.core.errors import LayoutError, UnusableInput
from raypipe.core.formats import InputFormat, detect_format, schema_paths
from raypipe.core.io import Storage, compression_of, parse_jsonl, retried
from raypipe.curate.chunks import DECODE_ERRORS, STREAM_READ
from raypipe.curate.shard import file_layout

SNIFF_BYTES = 64 << 10  # first rows: read until this much and one whole line, or SNIFF_ROWS lines ...
SNIFF_ROWS = 8
SNIFF_MAX_BYTES = 1 << 20  # ... but never more (a file whose first line is longer is left to phase 1)
THREADS = 16
DEADLINE_S = 60.0
SKIP = "or pass --skip-unreadable to reject it as a whole and curate the rest"
REPLACE = "replace or remove it"


@dataclass
class Checked:
    footers: dict[str, pq.FileMetaData] = field(default_factory=dict)  # uri -> its Parquet footer
    unusable: dict[str, str] = field(default_factory=dict)  # uri -> what is wrong, one line
    unchecked: list[str] = field(default_factory=list)  # first rows not read before the deadline

    def error(self) -> UnusableInput:
        """One line: the first unusable file and its fix, and how many more there are."""
        first, *more = sorted(self.unusable)
        problem = self.unusable[first]
        fix = "" if "record layout" in problem else f"; {REPLACE}"  # its own line names its fixes
        line = f"{first}: {problem}{fix}, {SKIP}"
        if more:
            names = ", ".join(posixpath.basename(u) for u in more[:3]) + (", ..." if len(more) > 3 else "")
            line += f" ({len(more)} more input file(s) fail this check: {names})"
        return UnusableInput(line)


def check_inputs(files: list[tuple[str, int]], storage: Storage, fmt: InputFormat | None,
                 deadline_s: float = DEADLINE_S) -> Checked:
    """Every Parquet footer (the planner needs them all) and the first rows of each JSONL file (decoded; their
    layout checked unless a --format or --fields says how to read them)."""
    out = Checked()
    t_end = time.monotonic() + deadline_s
    pool = ThreadPoolExecutor(THREADS)
    try:
        footers = {pool.submit(check_parquet, u, storage, fmt): u for u, _ in files if u.endswith(".parquet")}
        sniffs = {pool.submit(check_jsonl, u, storage, fmt): u for u, _ in files if not u.endswith(".parquet")}
        done, late = wait(sniffs, timeout=max(0.0, t_end - time.monotonic()), return_when=FIRST_EXCEPTION)
        for f, uri in footers.items():
            meta, problem = _result(f, uri)
            if meta is not None:
                out.footers[uri] = meta
            if problem:
                out.unusable[uri] = problem
        for f in done:
            if problem := _result(f, sniffs[f]):
                out.unusable[sniffs[f]] = problem
        out.unchecked = sorted(sniffs[f] for f in late)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


def _result(future, uri: str):
    """A check's result; storage that failed for good (after the SDK's and our retries) is an error naming the file."""
    try:
        return future.result()
    except OSError as e:
        raise OSError(f"cannot read {uri}: {_one_line(str(e))}") from e


def check_parquet(uri: str, storage: Storage, fmt: InputFormat | None) -> tuple[pq.FileMetaData | None, str | None]:
    """(its footer, or None; what is wrong with it, or None). Only the footer is read."""
    meta, damage = retried(read_footer, uri, storage)
    if damage:
        return None, f"unreadable Parquet file ({_one_line(damage)})"
    if fmt is None:
        try:
            detect_format(schema_paths(meta.schema.to_arrow_schema()))
        except LayoutError as e:
            return meta, _layout_problem(e, uri)
    return meta, None


def read_footer(uri: str, storage: Storage) -> tuple[pq.FileMetaData | None, str | None]:
    """(the footer, None), or (None, the damage) for a file that is not Parquet or whose footer is damaged; a storage
    error is raised (to be retried)."""
    fs, path = storage.filesystem(uri)
    try:
        return pq.ParquetFile(path, filesystem=fs).metadata, None
    except pa.ArrowInvalid as e:  # no magic bytes, 0 bytes, a footer longer than the file
        return None, str(e)
    except OSError as e:
        if "thrift" in str(e) or "Parquet" in str(e):  # footer bytes that do not decode
            return None, str(e)
        raise


def check_jsonl(uri: str, storage: Storage, fmt: InputFormat | None) -> str | None:
    """What is wrong with a JSONL file's first rows, or None (so far as they show)."""
    head, damage = retried(first_lines, uri, storage)
    if damage:
        return f"not a readable {compression_of(uri)} file ({_one_line(damage)})"
    if fmt is None and head:
        try:
            file_layout(list(parse_jsonl(head, 1)), uri)
        except LayoutError as e:
            return _layout_problem(e, uri)
    return None


def first_lines(uri: str, storage: Storage) -> tuple[bytes, str | None]:
    """(the whole lines at the start of a JSONL file, decoded and bounded by SNIFF_*; None), or (b"", the decoder's
    error) for a compressed file that does not decode. A stream cut short inside them gives what it decoded (phase
    1 keeps those rows and rejects the rest)."""
    fs, path = storage.filesystem(uri)
    compression = compression_of(uri)
    buf, eof = b"", False
    with fs.open_input_stream(path, compression=compression) as f:
        while not eof and len(buf) < SNIFF_MAX_BYTES:
            lines = buf.count(b"\n")
            if lines >= SNIFF_ROWS or (lines and len(buf) >= SNIFF_BYTES):
                break
            try:
                data = f.read(STREAM_READ if compression else SNIFF_BYTES)
            except OSError as e:
                if not any(m in str(e) for m in DECODE_ERRORS):
                    raise
                if "Truncated" not in str(e):
                    return b"", str(e)
                data = b""
            eof = not data
            buf += data
    return (buf if eof else buf[:buf.rfind(b"\n") + 1]), None


def _layout_problem(e: LayoutError, uri: str) -> str:
    return _one_line(str(e).removeprefix(f"{uri}: "))  # the file is named once


def _one_line(e: object) -> str:
    return " ".join(str(e).split())
