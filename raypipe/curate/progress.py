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


# Ray 2.60's core worker logs this at ERROR level for every Ray Data actor, whose constructor takes an actor
# handle (ray-project/ray#57733); it is not an error of the job, and a clean run prints no ERROR line.
SPURIOUS = (b"has constructor arguments in the object store and max_restarts > 0",)


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray Data's per-operator logs and bars off (ours are one bar per phase), and the known spurious core-worker
    ERROR line filtered out of this process's stderr (everything else passes through unchanged)."""
    import logging
    import os
    import threading

    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while True:
            data = os.read(read_end, 65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            keep = [ln for ln in lines if not any(s in ln for s in SPURIOUS)]
            out = b"".join(ln + b"\n" for ln in keep)
            if b"\n" not in pending and b"\r" in pending:  # a progress bar's redraw: pass it on now
                out, pending = out + pending, b""
            if out:
                os.write(saved, out)
        if pending:
            os.write(saved, pending)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
        data_log.setLevel(level)
