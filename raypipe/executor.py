"""The one executor of raypipe's stages (raypipe.core.stage): how a job's steps run, never what they compute.

    ex = executor(nbytes, below_mb)                   # in this process for a small input, else on Ray
    for result in ex.map(ScoreChunk(cfg), chunks, pool=Pool(lo, hi)):   # an autoscaling actor pool
    for result in ex.map(WriteChunk(cfg), chunks, window=4):            # a task per item, `window` in flight
    parts = ex.submit(partition, key, num_returns=8)                    # plain tasks for shuffles
    ex.gather(parts, fold)                                              # results folded as they finish

`RayExecutor` puts stages on Ray: actor pools of plain actors (raypipe.executor_pool: restarted and their calls
retried without limit, as a lost node needs), Ray Data for datasets, tasks with unlimited retries (a stage's work
is idempotent: it rewrites the same files), a progress bar per map on a terminal and one summary line per map in
job logs, with the map's counts.
`LocalExecutor` runs the same calls in the calling process: no Ray, the same outputs.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from raypipe.core.stage import Stage, StageStats, count
from raypipe.executor_pool import Pool, actor_pool, run_pool  # noqa: F401 (Pool and actor_pool: imported from here)


class Progress:
    """A bar on a terminal (tqdm on stderr) and one summary line at the end: items, records, MB/s."""

    def __init__(self, label: str, total: int, total_bytes: int = 0):
        from tqdm import tqdm

        self.label, self.total_bytes, self.t0 = label, total_bytes, time.perf_counter()
        self.records = self.bytes = self.done = 0
        self.bar = tqdm(total=total, desc=f"[raypipe] {label}", unit="chunk", file=sys.stderr, dynamic_ncols=True,
                        mininterval=1.0, disable=None)

    def advance(self, nbytes: int = 0, records: int = 0) -> None:
        self.records += records
        self.bytes += nbytes
        self.done += 1
        rate = self.bytes / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.records:,} records, {rate:.1f} MB/s", refresh=False)
        self.bar.update(1)

    def close(self, stats: StageStats | None = None) -> None:
        self.bar.close()
        seconds = time.perf_counter() - self.t0
        tail = f"; {stats.line()}" if stats is not None and stats.counters else ""
        print(f"[raypipe] {self.label}: {self.done} chunks, {self.records:,} records, {self.bytes / 1e6:,.1f} MB in "
              f"{seconds:.1f}s ({self.bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s){tail}", flush=True)


class Executor:
    """The interface both executors speak. `stats`: each stage's counts over every map of it so far."""

    stats: dict[str, StageStats]

    def cpus(self) -> float:
        raise NotImplementedError

    def map(self, stage: Stage, items: Iterable[dict], *, pool: Pool | None = None, window: int | None = None,
            label: str | None = None, size: Callable[[dict], int] | None = None,
            records: Callable[[Any], int] | None = None) -> Iterator[Any]:
        """Each item through the stage, results as they finish (any order). With `label`, a progress bar that
        counts `size(item)` bytes and `records(result)` records."""
        raise NotImplementedError

    def submit(self, fn: Callable, *args: Any, cpus: float = 0.5, num_returns: int = 1) -> Any:
        raise NotImplementedError

    def gather(self, refs: list, fold: Callable[[Any], None]) -> None:
        raise NotImplementedError

    def get(self, refs: Any) -> Any:
        raise NotImplementedError


def _stage_call(stage: Stage, item: Any) -> Any:
    return stage(item)


class BatchActor:
    """Ray Data actor holding one stage that maps whole batches (Arrow tables or column dicts)."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def __call__(self, batch):
        return self.stage(batch)


class RayExecutor(Executor):
    def __init__(self):
        import ray

        self.ray = ray
        self.stats = {}
        self._remote = {}

    @property
    def data(self):
        """ray.data, imported (0.5 s) and set up at the first dataset: a job of actor pools and tasks needs none."""
        import ray.data

        from raypipe.ray_env import quiet_data_logs

        quiet_data_logs()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # a job prints its own progress, one bar per map
        ctx.execution_options.preserve_order = True  # datasets come back in input order
        return ray.data

    def read(self, fn: Callable[..., Any], items: list[dict], **kwargs: Any):
        """A Dataset of what fn(batch of one item, **kwargs) returns for each item, in item order."""
        return self.data.from_items(items).map_batches(fn, fn_kwargs=kwargs, batch_size=1, num_cpus=0.5)

    def read_parquet(self, paths: list[str], filesystem, columns: list[str]):
        return self.data.read_parquet(paths, filesystem=filesystem, columns=columns)

    def tables(self, ds) -> list:
        """The Arrow tables of a Dataset, block by block in order (empty blocks left out)."""
        return [t for t in (self.ray.get(r) for r in ds.to_arrow_refs()) if t.num_rows]

    def limit(self, ds, n: int):
        return ds.limit(n)

    def write_parquet(self, ds, uri: str, storage) -> None:
        fs, path = storage.filesystem(uri)
        ds.write_parquet(path, filesystem=fs)

    def cpus(self) -> float:
        return self.ray.cluster_resources().get("CPU", 1)

    def gpus(self) -> float:
        return self.ray.cluster_resources().get("GPU", 0)

    def pool(self, actors: int | None = None, **kwargs) -> Pool:
        """actor_pool() for this cluster."""
        return actor_pool(actors, cpus=self.cpus(), gpus=self.gpus(), **kwargs)

    def map(self, stage, items, *, pool=None, window=None, label=None, size=None, records=None):
        items = list(items)
        stats = self.stats.setdefault(stage.name, StageStats(stage.name))
        bar = Progress(label, len(items), sum(size(i) for i in items) if size else 0) if label else None
        results = self._actors(stage, items, pool) if pool is not None else self._tasks(stage, items, window)
        t0 = time.perf_counter()
        try:
            for item, out in results:
                stats.batches += 1
                stats.items_in += 1
                stats.items_out += count(out)
                if records:
                    stats.counters["records"] = stats.counters.get("records", 0) + records(out)
                if bar is not None:
                    bar.advance(size(item) if size else 0, records(out) if records else 0)
                yield out
        finally:
            stats.seconds += time.perf_counter() - t0
            if bar is not None:
                bar.close()

    def _actors(self, stage: Stage, items: list[dict], pool: Pool):
        return run_pool(stage, items, pool)

    def _tasks(self, stage: Stage, items: list[dict], window: int | None):
        task = self.ray.remote(num_cpus=stage.resources.total_cpus, num_gpus=stage.resources.gpus,
                               max_retries=-1)(_stage_call)
        window = window or max(2, int(2 * self.cpus()))
        todo, running = list(reversed(items)), {}
        staged = self.ray.put(stage)
        while todo or running:
            while todo and len(running) < window:
                item = todo.pop()
                running[task.remote(staged, item)] = item
            done, _ = self.ray.wait(list(running), num_returns=1)
            item = running.pop(done[0])
            yield item, self.ray.get(done[0])

    def map_dataset(self, stage: Stage, ds, *, pool: Pool, batch_size: int, batch_format: str = "pyarrow"):
        """A Ray Dataset through the stage, batch by batch, in an actor pool (lazily: a Dataset comes back)."""
        actor = type(f"{type(stage).__name__}Actor", (BatchActor,), {"__module__": __name__})
        return ds.map_batches(actor, fn_constructor_kwargs={"stage": stage}, batch_size=batch_size,
                              batch_format=batch_format,
                              compute=self.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
                              num_cpus=pool.cpus, **({"num_gpus": pool.gpus} if pool.gpus else {}))

    def submit(self, fn, *args, cpus=0.5, num_returns=1):
        key = (fn, cpus)
        if key not in self._remote:  # one remote function per (fn, cpus): exported to the cluster once
            self._remote[key] = self.ray.remote(num_cpus=cpus)(fn)
        refs = self._remote[key].options(num_returns=num_returns).remote(*args)
        return refs if num_returns == 1 or isinstance(refs, list) else [refs]

    def gather(self, refs, fold):
        pending = list(refs)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=min(len(pending), 16))
            for value in self.ray.get(done):
                fold(value)

    def get(self, refs):
        return self.ray.get(refs)


@dataclass(frozen=True)
class _Part:
    """Result `index` of a threaded call that returns several."""

    call: Any
    index: int


def _value(ref: Any) -> Any:
    from concurrent.futures import Future

    if isinstance(ref, _Part):
        return ref.call.result()[ref.index]
    return ref.result() if isinstance(ref, Future) else ref


class LocalExecutor(Executor):
    """The same calls in this process: a stage set up once, items one after another; `submit` called at once, or
    with `threads` > 1 in a pool of threads (for calls that spend their time in Arrow and I/O, which release the
    GIL), a call's results given to later calls as they are."""

    def __init__(self, cpus: float | None = None, threads: int = 1):
        self._cpus = cpus or os.cpu_count() or 1
        self.stats = {}
        self._threads = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(threads)  # FIFO: a call's inputs were submitted, so started, before it

    def cpus(self) -> float:
        return self._cpus

    def map(self, stage, items, *, pool=None, window=None, label=None, size=None, records=None):
        items = list(items)
        bar = Progress(label, len(items), sum(size(i) for i in items) if size else 0) if label else None
        try:
            for item in items:
                out = stage(item)
                if bar is not None:
                    bar.advance(size(item) if size else 0, records(out) if records else 0)
                if records:
                    stage.stats.counters["records"] = stage.stats.counters.get("records", 0) + records(out)
                yield out
        finally:
            self._finish(stage)
            if bar is not None:
                bar.close()

    def _finish(self, stage: Stage) -> None:
        """The stage's counts added to this executor's, then its teardown."""
        if stage._ready:
            self.stats.setdefault(stage.name, StageStats(stage.name)).add(stage.stats)
        stage.close()

    def submit(self, fn, *args, cpus=0.5, num_returns=1):
        if self._threads is None:
            out = fn(*args)
            return out if num_returns == 1 else list(out)
        call = self._threads.submit(lambda: fn(*(_value(a) for a in args)))
        return call if num_returns == 1 else [_Part(call, i) for i in range(num_returns)]

    def gather(self, refs, fold):
        for value in refs:
            fold(_value(value))

    def close(self) -> None:
        """Ends the threads of `submit` (each call, submitted before, runs to its end)."""
        if self._threads is not None:
            self._threads.shutdown()

    def get(self, refs):
        return [_value(r) for r in refs] if isinstance(refs, list) else _value(refs)

    # Datasets in this process are lists of Arrow tables, in order.
    def read(self, fn, items, **kwargs):
        return [fn({k: [v] for k, v in item.items()}, **kwargs) for item in items]

    def read_parquet(self, paths, filesystem, columns):
        import pyarrow.parquet as pq

        return [pq.read_table(p, filesystem=filesystem, columns=columns) for p in paths]

    def tables(self, ds) -> list:
        return [t for t in ds if t.num_rows]

    def limit(self, ds, n: int) -> list:
        out = []
        for t in ds:
            if n <= 0:
                break
            out.append(t.slice(0, n))
            n -= out[-1].num_rows
        return out

    def map_dataset(self, stage, ds, *, pool=None, batch_size, batch_format="pyarrow"):
        """The tables through the stage in batches of `batch_size` rows, as Ray Data batches them (across tables);
        `default` / `numpy` batches come as dicts of columns."""
        import pyarrow as pa

        tables = self.tables(ds)
        if not tables:
            return []
        whole = pa.concat_tables(tables, promote_options="default").combine_chunks()
        out = []
        try:
            for start in range(0, whole.num_rows, batch_size):
                batch = whole.slice(start, batch_size)
                result = stage(batch if batch_format == "pyarrow" else batch.to_pydict())
                out.append(result if isinstance(result, pa.Table) else pa.table(result))
        finally:
            self._finish(stage)
        return out

    def write_parquet(self, ds, uri: str, storage) -> None:
        from raypipe.core import io

        tables = self.tables(ds)
        if tables:
            import pyarrow as pa

            io.write_parquet(pa.concat_tables(tables, promote_options="default"), io.join(uri, "part-00000.parquet"),
                             storage)


def in_process(nbytes: int, below_mb: float) -> bool:
    """A small input, with no cluster to join: Ray's start would cost more than the work. A submitted job runs on its
    cluster; a Ray this process started does not change the choice, so a run's path never depends on what ran
    before it (below_mb 0: always on Ray)."""
    from raypipe.ray_env import in_cluster_job

    return nbytes < below_mb * (1 << 20) and not in_cluster_job()


def executor(nbytes: int, below_mb: float, num_cpus: int | None = None, plugins: list[str] | tuple[str, ...] = ()
             ) -> Executor:
    """The executor of a job over `nbytes` of input: in this process when in_process() says so, else on Ray (the
    cluster joined, or a local Ray started: raypipe.ray_env.ensure_ray)."""
    if in_process(nbytes, below_mb):
        return LocalExecutor(num_cpus)
    from raypipe.ray_env import ensure_ray

    ensure_ray(num_cpus, plugins=plugins)
    return RayExecutor()
