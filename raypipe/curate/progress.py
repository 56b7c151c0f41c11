"""One progress bar per phase of the curation job: chunks done, records, MB/s (tqdm on stderr)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


class Progress:
    def __init__(self, bar, total_bytes: int):
        self.bar, self.records, self.bytes, self.t0 = bar, 0, 0, time.perf_counter()

    def advance(self, nbytes: int, records: int) -> None:
        self.records += records
        self.bytes += nbytes
        rate = self.bytes / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.records:,} records, {rate:.1f} MB/s", refresh=False)
        self.bar.update(1)


@contextmanager
def progress(name: str, total_bytes: int, chunks: int) -> Iterator[Progress]:
    from tqdm import tqdm

    with tqdm(total=chunks, desc=f"[raypipe] {name}", unit="chunk", file=sys.stderr, dynamic_ncols=True,
              mininterval=1.0, disable=None) as bar:  # a bar on a terminal; job logs get the summary line below
        p = Progress(bar, total_bytes)
        yield p
    seconds = time.perf_counter() - p.t0
    print(f"[raypipe] {name}: {chunks} chunks, {p.records:,} records, {p.bytes / 1e6:,.1f} MB in {seconds:.1f}s "
          f"({p.bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)", flush=True)
