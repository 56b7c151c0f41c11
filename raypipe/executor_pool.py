"""The executor's actor pools: plain Ray actors, each holding one copy of a stage (raypipe.core.stage)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

from raypipe.core.stage import Stage


@dataclass(frozen=True)
class Pool:
    """An autoscaling actor pool: from `min_size` (what the cluster holds now) to `max_size` actors, each with
    `cpus` CPUs (a fraction leaves room for Ray Data's own tasks on a small machine)."""

    min_size: int
    max_size: int
    cpus: float
    gpus: float = 0.0


def actor_pool(actors: int | None = None, work_items: int | None = None, cpus: float | None = None,
               gpus: float = 0.0, gpus_per_actor: float | None = 0.0, reserve_cpus: int = 0) -> Pool:
    """The pool of a stage over a dataset, for a cluster of `cpus` CPUs and `gpus` GPUs.

    With GPUs (`gpus_per_actor` > 0, or None when the cluster has any): one actor per `gpus_per_actor` GPUs.
    Else CPU actors: `actors`, or one per CPU (less `reserve_cpus`), at most one per work item, each with a
    fractional CPU that leaves room for Ray Data's own read and write tasks: a pool holding every CPU of a small
    machine deadlocks silently.
    """
    cpus = cpus or 1
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if gpus_per_actor > 0:
        n = actors or max(1, int(gpus / gpus_per_actor))
        return Pool(n, n, 1.0, gpus_per_actor)
    size = actors or max(1, min(int(cpus) - reserve_cpus, work_items or int(cpus)))
    return Pool(size, size, min(1.0, max(0.25, (cpus - 0.5) / size)))


ACTOR_QUEUE = 2  # items given to a pool's actor at a time


class StageActor:
    """The actor of a pool holding one stage (set up once in the actor, at its first item)."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def call(self, item: Any) -> Any:
        return self.stage(item)

    def close(self) -> None:
        """The stage's teardown (the pool then ends the actor)."""
        self.stage.close()


def run_pool(stage: Stage, items: list[dict], pool: Pool) -> Iterator[tuple[dict, Any]]:
    """Items through a pool of plain actors, yielded as they finish: `min_size` actors at once, one more each
    second that work waits and the cluster has room for it (up to `max_size`), ACTOR_QUEUE items given to each
    (the next one is there when it finishes one). Actors restart and their calls retry without limit (a lost
    node); an actor left without work is released, so that a restarting one finds room. (Ray Data's actor pool
    took 2.3 s to start two actors that start in 0.4 s alone, and it holds no data here: an item names a
    chunk, which the actor reads.)"""
    import ray

    # named for the stage (ScoreChunkActor), so that the cluster's actor list says what runs where
    cls = ray.remote(type(f"{type(stage).__name__}Actor", (StageActor,), {"__module__": __name__})).options(
        num_cpus=pool.cpus, num_gpus=pool.gpus, max_restarts=-1, max_task_retries=-1, scheduling_strategy="SPREAD")
    staged = ray.put(stage)
    actors: dict[int, Any] = {}
    load: dict[int, int] = {}

    def start() -> None:
        actors[len(load)] = cls.remote(staged)
        load[len(load)] = 0

    def room() -> bool:
        free = ray.available_resources()
        return free.get("CPU", 0) >= pool.cpus and free.get("GPU", 0) >= pool.gpus

    for _ in range(max(1, min(pool.min_size, len(items)))):
        start()
    todo, running, grow_at = list(reversed(items)), {}, time.monotonic() + 1.0
    closing: dict[Any, Any] = {}  # close() call -> its actor, ended once the call returns

    def end(timeout: float) -> None:
        ready, _ = ray.wait(list(closing), num_returns=len(closing), timeout=timeout)
        for ref in ready if timeout == 0 else list(closing):
            ray.kill(closing.pop(ref), no_restart=True)
    try:
        while todo or running:
            if todo and len(actors) < min(pool.max_size, len(items)) and time.monotonic() >= grow_at:
                grow_at = time.monotonic() + 1.0
                if room():
                    start()
            for i, actor in actors.items():
                while todo and load[i] < ACTOR_QUEUE:
                    item = todo.pop()
                    running[actor.call.remote(item)] = (item, i)
                    load[i] += 1
            if not todo:
                for i in [i for i in actors if load[i] == 0]:
                    actor = actors.pop(i)
                    closing[actor.close.remote()] = actor
            if closing:
                end(0)
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                item, i = running.pop(ref)
                load[i] -= 1
                yield item, ray.get(ref)
    finally:
        closing.update((a.close.remote(), a) for a in actors.values())
        end(30)

