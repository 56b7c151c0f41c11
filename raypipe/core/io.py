"""Local and s3:// storage through pyarrow.fs: listing inputs, reading shards row by row, writing outputs.

S3 settings come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION, credentials) or an explicit
endpoint. A `Storage` is a small picklable description, resolved to a filesystem where it is used (a driver,
a Ray actor, a Serve replica).
"""
from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import dataclasses
from dataclasses import dataclass
import time
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from raypipe.core.schema import stable_hash
from raypipe.core.settings import SettingsGroup

T = TypeVar("T")
INPUT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet")


TRANSIENT_ATTEMPTS = 4
UNREACHABLE = ("NETWORK_CONNECTION", "curlCode: 6", "curlCode: 7", "Could not resolve host")


def retried(fn: Callable[..., T], *args, attempts: int = TRANSIENT_ATTEMPTS, **kwargs) -> T:
    """fn(*args, **kwargs), again after a storage error (a connection dropped mid-body is not retried by the S3
    client itself); a missing file is not an error that time fixes. Every call it guards is idempotent."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as e:
            # an endpoint that cannot be reached was retried by the S3 client already (its own retry strategy)
            if attempt == attempts - 1 or any(m in str(e) for m in UNREACHABLE):
                raise
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Storage:
    s3_endpoint: str | None = None
    s3_region: str | None = None
    connect_timeout_s: float = 10.0
    max_attempts: int | None = None  # S3 attempts per request (None: $RAYPIPE_S3_MAX_ATTEMPTS, else 8)

    def filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path inside it) for a local path or an s3:// URI."""
        if uri.startswith("s3://"):
            fs = s3_filesystem(self.s3_endpoint, self.s3_region, self.connect_timeout_s, self.max_attempts)
            return fs, uri[len("s3://"):].rstrip("/")
        return pafs.LocalFileSystem(), os.path.abspath(uri)

    def probing(self) -> "Storage":
        """The same storage for a quick look (a plan, a check): a short connect timeout, one attempt."""
        return dataclasses.replace(self, connect_timeout_s=3.0, max_attempts=1)


class StorageSettings(SettingsGroup):
    """Where s3:// lives: the one definition of the two settings every command that reads or writes storage has."""

    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL); credentials and "
                                    "region from the standard AWS settings")
    s3_region: str | None = Field(None, description="S3 region (else AWS_REGION / AWS_DEFAULT_REGION)")

    def storage(self) -> Storage:
        return Storage(self.s3_endpoint, self.s3_region)


def s3_filesystem(endpoint: str | None = None, region: str | None = None, connect_timeout_s: float = 10.0,
                  max_attempts: int | None = None) -> pafs.S3FileSystem:
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    attempts = max_attempts or int(os.environ.get("RAYPIPE_S3_MAX_ATTEMPTS", "8"))
    kwargs: dict = {
        "region": region,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        "connect_timeout": connect_timeout_s,
        "request_timeout": 60,
    }
    if endpoint:
        u = urlparse(endpoint)
        kwargs["endpoint_override"] = u.netloc or u.path
        kwargs["scheme"] = u.scheme or "https"
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def join(root: str, *parts: str) -> str:
    """Join a URI or local path with relative parts."""
    if root.startswith("s3://"):
        return "s3://" + posixpath.join(root[len("s3://"):].rstrip("/"), *parts)
    return os.path.join(root, *parts)


def _hidden(relative: str) -> bool:
    """Files under a name starting with '.' or '_' (markers, temp files, a run's _work/) are not inputs."""
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def list_inputs(uri: str, storage: Storage) -> list[str]:
    """Input files of a file, folder or glob, as URIs in a stable order."""
    return [u for u, _ in list_input_files(uri, storage)]


def list_input_files(uri: str, storage: Storage) -> list[tuple[str, int]]:
    """(URI, size in bytes) of the input files of a file, folder or glob, in a stable order: one listing."""
    fs, path = storage.filesystem(uri)
    prefix = "s3://" if uri.startswith("s3://") else ""
    if any(c in path for c in "*?["):
        base = path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        found = [(i.path, i.size) for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)
                 and not _hidden(i.path[len(base):])]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            found = [(path, info.size)]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            found = [(i.path, i.size) for i in infos if i.type == pafs.FileType.File
                     and i.path.endswith(INPUT_SUFFIXES) and not _hidden(i.path[len(path):])]
        else:
            raise FileNotFoundError(f"input not found: {uri}")
    if not found:
        raise FileNotFoundError(f"no input files ({', '.join(INPUT_SUFFIXES)}) under {uri}")
    return sorted((prefix + p, int(n or 0)) for p, n in found)


def total_size(uris: list[str], storage: Storage) -> int:
    """The bytes of these files together (one request per file)."""
    total = 0
    for uri in uris:
        fs, path = storage.filesystem(uri)
        total += int(fs.get_file_info(path).size or 0)
    return total


def list_names(uri: str, storage: Storage) -> set[str]:
    """The names of the files directly in a folder (none if it does not exist): one listing request (paginated)."""
    fs, path = storage.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return {posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File}


def shard_key(uri: str) -> str:
    """A deterministic, filesystem-safe name for an input file."""
    base = posixpath.basename(uri)
    for suf in sorted(INPUT_SUFFIXES, key=len, reverse=True):
        if base.endswith(suf):
            base = base[: -len(suf)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:80]
    return f"{safe}-{stable_hash(uri, n=4)}"


def compression_of(path: str) -> str | None:
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith(".zst"):
        return "zstd"
    return None


def read_bytes(uri: str, storage: Storage) -> bytes:
    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_stream(path, compression=compression_of(path)) as f:
            return f.read()
    except OSError as e:
        raise OSError(f"cannot read {uri}: {e}") from e


@dataclass
class RawRow:
    index: int  # the row's line in its file as an editor shows it, from 1 (in Parquet: its position, from 1)
    value: object | None  # the parsed record, or None when it could not be parsed
    raw: str
    error: str | None = None


def iter_raw_rows(uri: str, storage: Storage) -> Iterator[RawRow]:
    """Every row of an input file, parsed where possible; a row that cannot be parsed carries its error."""
    if uri.endswith(".parquet"):
        fs, path = storage.filesystem(uri)
        table = pq.read_table(path, filesystem=fs)
        for i, rec in enumerate(table.to_pylist(), start=1):
            yield RawRow(i, rec, "")
        return
    yield from parse_jsonl(read_bytes(uri, storage))


def parse_jsonl(data: bytes, first_line: int = 1) -> Iterator[RawRow]:
    """The rows of whole JSONL lines, numbered from `first_line` (blank lines count, as in an editor)."""
    for i, line in enumerate(data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield RawRow(i, None, line.decode("utf-8", "replace"), f"not UTF-8: {e.reason} at byte {e.start}")
            continue
        try:
            yield RawRow(i, json.loads(text), text)
        except (json.JSONDecodeError, RecursionError) as e:
            yield RawRow(i, None, text, f"malformed JSON: {str(e)[:200]}")


def write_parquet(table: pa.Table, uri: str, storage: Storage) -> None:
    """Write atomically on local disk (tmp + rename); S3 puts are atomic per object."""
    fs, path = storage.filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = path + ".tmp"
        pq.write_table(table, tmp, filesystem=fs, compression="zstd", compression_level=1)
        os.replace(tmp, path)
    else:
        pq.write_table(table, path, filesystem=fs, compression="zstd", compression_level=1)


class ParquetStream:
    """A Parquet file written one table (row group) at a time, so its writer never holds it whole. The file
    appears complete or not at all: on local disk through tmp + rename, on S3 when the upload completes at close."""

    def __init__(self, uri: str, storage: Storage):
        self.uri, self.storage, self.rows = uri, storage, 0
        self._writer = self._sink = self._schema = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            fs, path = self.storage.filesystem(self.uri)
            fs.create_dir(posixpath.dirname(path), recursive=True)
            self._local = isinstance(fs, pafs.LocalFileSystem)
            self._path, self._tmp = path, path + ".tmp" if self._local else path
            self._sink = fs.open_output_stream(self._tmp)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._sink, table.schema, compression="zstd", compression_level=1)
        self._writer.write_table(table if table.schema == self._schema else table.cast(self._schema))
        self.rows += table.num_rows

    def close(self) -> int:
        """Finish the file (none is written if nothing was); the number of rows written."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            if self._local:
                os.replace(self._tmp, self._path)
            self._writer = None
        return self.rows


def read_parquet(uri: str, storage: Storage, columns: list[str] | None = None) -> pa.Table:
    fs, path = storage.filesystem(uri)
    return retried(pq.read_table, path, filesystem=fs, columns=columns)


def read_parquet_dir(uri: str, storage: Storage, columns: list[str] | None = None) -> pa.Table | None:
    fs, path = storage.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if not files:
        return None
    return pa.concat_tables([retried(pq.read_table, f, filesystem=fs, columns=columns) for f in files],
                            promote_options="default")


def write_text(text: str, uri: str, storage: Storage) -> None:
    fs, path = storage.filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = path + ".tmp" if isinstance(fs, pafs.LocalFileSystem) else path
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode("utf-8"))
    if tmp != path:
        os.replace(tmp, path)


def read_text(uri: str, storage: Storage) -> str | None:
    fs, path = storage.filesystem(uri)

    def read() -> str | None:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    return retried(read)


def exists(uri: str, storage: Storage) -> bool:
    fs, path = storage.filesystem(uri)
    return retried(fs.get_file_info, path).type != pafs.FileType.NotFound


def remove_tree(uri: str, storage: Storage) -> None:
    fs, path = storage.filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
