"""The input's fingerprint, recorded in manifest.json: does a frozen policy (--policy-from) meet the input it was
measured on?

A record's digest is blake2b of its `content_hash` (phase 1's hash of source, problem and response), its id and its
reference answer; a rejected row's, of its raw text. A chunk's hash is the sum of its digests modulo 2**128 and the
input's the sum of its chunks' hashes: the same records give the same fingerprint however they are split into
files and chunks and in whatever order (a multiset hash), and a changed reference answer changes it. Pure Python.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

MOD = 1 << 128


def _digest(*parts: str | None) -> int:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(b"\x00" if p is None else p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big")


def records_hash(scored: pa.Table) -> int:
    """The sum of a block of scored records' digests (as phase 1 wrote them: before the dedup fixes)."""
    cols = [scored.column(c).to_pylist() for c in ("content_hash", "id", "reference_answer")]
    return sum(_digest("record", *row) for row in zip(*cols)) % MOD


def rejects_hash(rejects: pa.Table | None) -> int:
    if rejects is None or "raw" not in rejects.column_names:
        return 0
    return sum(_digest("reject", raw) for raw in rejects.column("raw").to_pylist()) % MOD


def combine(chunk_hashes: list[int | str]) -> str:
    """The input's fingerprint from its chunks' hashes (ints, or the hex strings `chunk_hex` gives)."""
    return chunk_hex(sum(int(h, 16) if isinstance(h, str) else h for h in chunk_hashes))


def chunk_hex(value: int) -> str:
    return f"{value % MOD:032x}"
