"""The stage contract every raypipe job is composed of (no Ray here).

A stage is a small picklable object built where the job is planned: it declares its name, what it reads and what
it writes (columns of an Arrow batch, or the keys of a work item), and the resources one copy of it needs, math-verify
worker processes included. `setup()` runs once in the process that holds it (a Ray actor, a Serve replica, or the
calling process), `process(batch)` once per batch, `teardown()` at the end. One executor (raypipe.executor) runs any
stage: on Ray as an autoscaling actor pool with retries, progress and per-stage counts, or in the calling process
for small inputs. Modelled on NeMo Curator's ProcessingStage (resources with a `with_()` override) and datatrove's
PipelineStep (per-step stats).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Resources:
    """What one copy of a stage holds."""

    cpus: float = 1.0
    gpus: float = 0.0
    worker_processes: int = 0  # processes the stage starts itself (the math-verify workers), each `worker_cpus`
    worker_cpus: float = 0.0

    @property
    def total_cpus(self) -> float:
        return self.cpus + self.worker_processes * self.worker_cpus


@dataclass
class StageStats:
    """Per-stage counts, datatrove style: batches, items in and out, seconds in `process`."""

    name: str
    batches: int = 0
    items_in: int = 0
    items_out: int = 0
    seconds: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)

    def add(self, other: "StageStats") -> None:
        self.batches += other.batches
        self.items_in += other.items_in
        self.items_out += other.items_out
        self.seconds += other.seconds
        for k, v in other.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v

    def line(self) -> str:
        extra = "".join(f", {k} {v:g}" for k, v in sorted(self.counters.items()))
        return (f"{self.name}: {self.batches} batches, {self.items_in} in, {self.items_out} out, "
                f"{self.seconds:.1f}s{extra}")


def count(batch: Any) -> int:
    """Items in a batch: rows of a table, the length of a column dict, or one work item."""
    if hasattr(batch, "num_rows"):
        return batch.num_rows
    if isinstance(batch, dict) and batch and all(isinstance(v, list) for v in batch.values()):
        return len(next(iter(batch.values())))
    return 1


class Stage:
    """One step of a job. Subclasses set `name`, `reads`, `writes` and implement `process`."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    resources: Resources = Resources()
    _ready = False

    def setup(self) -> None:
        """Once per process, before the first batch: load models, start worker processes."""

    def process(self, batch: Any) -> Any:
        raise NotImplementedError

    def teardown(self) -> None:
        """Once per process, after the last batch."""

    def with_(self, **resources: Any) -> "Stage":
        """This stage with other resources (cpus, gpus, worker_processes, worker_cpus)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.resources = dataclasses.replace(self.resources, **resources)
        return copy

    def __call__(self, batch: Any) -> Any:
        """The batch through `process`, set up on first use, counted in `stats`."""
        if not self._ready:
            self.setup()
            self._ready = True
            self.stats = StageStats(self.name)
        t0 = time.perf_counter()
        out = self.process(batch)
        self.stats.batches += 1
        self.stats.items_in += count(batch)
        self.stats.items_out += count(out) if out is not None else 0
        self.stats.seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:
        if self._ready:
            self.teardown()
            self._ready = False
