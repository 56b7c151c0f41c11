"""The stage contract and its two executors: a stage set up once per process, its resources overridable, the same
results whether it runs in this process or on Ray (an actor pool, or a task per item)."""
from __future__ import annotations

import os

import pyarrow as pa

from raypipe.core.stage import Resources, Stage
from raypipe.executor import LocalExecutor, Pool, actor_pool


class Square(Stage):
    name = "square"
    reads = ("key", "x")
    writes = ("key", "y", "pid", "setups")

    def __init__(self):
        self.resources = Resources(cpus=0.5)
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, item: dict) -> dict:
        return {"key": item["key"], "y": item["x"] ** 2, "pid": os.getpid(), "setups": self.setups}


class Double(Stage):
    name = "double"
    reads = writes = ("x",)

    def process(self, batch: pa.Table) -> pa.Table:
        return pa.table({"x": [2 * v for v in batch.column("x").to_pylist()]})


ITEMS = [{"key": f"k{i}", "x": i} for i in range(12)]


def quotient_and_rest(a: int, b: int) -> tuple[int, int]:
    return divmod(a, b)


def test_a_stage_runs_in_process_set_up_once_and_counted():
    stage = Square()
    out = list(LocalExecutor(2).map(stage, ITEMS))
    assert [r["y"] for r in out] == [i * i for i in range(12)]
    assert {r["setups"] for r in out} == {1} and {r["pid"] for r in out} == {os.getpid()}
    again = Square()
    again(ITEMS[0]), again(ITEMS[1])
    assert (again.stats.batches, again.stats.items_in, again.stats.items_out) == (2, 2, 2)
    assert "square: 2 batches" in again.stats.line()


def test_resources_are_overridden_on_a_copy():
    stage = Square()
    bigger = stage.with_(cpus=2.0, worker_processes=2, worker_cpus=0.25)
    assert bigger.resources.total_cpus == 2.5 and stage.resources.total_cpus == 0.5
    assert type(bigger) is Square


def test_the_pool_planner_leaves_room_for_ray_datas_own_tasks():
    assert actor_pool(cpus=2) == Pool(2, 2, 0.75)
    assert actor_pool(cpus=2, reserve_cpus=1) == Pool(1, 1, 1.0)
    assert actor_pool(cpus=8, gpus=2, gpus_per_actor=None) == Pool(2, 2, 1.0, 1.0)


def test_ray_runs_the_same_stage_in_an_actor_pool_and_as_tasks(ray_local):
    import sys

    from ray import cloudpickle

    from raypipe.executor import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stages of this file, shipped to the workers
    ex = RayExecutor()
    pooled = list(ex.map(Square(), ITEMS, pool=Pool(1, 2, 0.5)))
    tasked = list(ex.map(Square(), ITEMS, window=3))
    local = list(LocalExecutor().map(Square(), ITEMS))
    ys = lambda rows: sorted((r["key"], r["y"]) for r in rows)  # noqa: E731 (results arrive as they finish)
    assert ys(pooled) == ys(tasked) == ys(local)
    assert {r["setups"] for r in pooled} == {1}, "an actor sets its stage up once"
    assert os.getpid() not in {r["pid"] for r in pooled + tasked}
    ds = ray_local.data.from_items([{"x": i} for i in range(10)])
    doubled = ex.map_dataset(Double(), ds, pool=Pool(1, 1, 0.5), batch_size=4)
    assert sorted(t for b in ex.tables(doubled) for t in b.column("x").to_pylist()) == [2 * i for i in range(10)]
    parts = ex.submit(quotient_and_rest, 17, 5, num_returns=2)
    got = []
    ex.gather(parts, got.append)
    assert sorted(got) == [2, 3] and LocalExecutor().submit(quotient_and_rest, 17, 5, num_returns=2) == [3, 2]
    threaded = LocalExecutor(threads=2)  # results of a call handed to the next as they are, as on Ray
    q, r = threaded.submit(quotient_and_rest, 17, 5, num_returns=2)
    assert threaded.get([q, r, threaded.submit(quotient_and_rest, q, r, num_returns=1)]) == [3, 2, (1, 1)]


class Slow(Stage):
    """Records each copy's teardown in a folder (its pid), so the test sees every actor end its stage."""

    name = "slow"
    reads = ("key", "x")
    writes = ("key", "pid")

    def __init__(self, folder: str):
        self.folder = folder
        self.resources = Resources(cpus=0.5)

    def process(self, item: dict) -> dict:
        import time

        time.sleep(0.3)
        return {"key": item["key"], "pid": os.getpid()}

    def teardown(self) -> None:
        open(os.path.join(self.folder, str(os.getpid())), "w").close()


def test_an_actor_pool_grows_into_free_cpus_and_ends_every_actor(ray_local, tmp_path):
    """One actor at first; more while work waits and the cluster has room (2 CPUs hold 3 more of 0.5 CPU); each
    actor tears its stage down and ends when the work is done."""
    import sys
    import time

    from ray import cloudpickle

    from raypipe.executor import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rows = list(RayExecutor().map(Slow(str(tmp_path)), [{"key": f"k{i}", "x": i} for i in range(24)],
                                  pool=Pool(1, 3, 0.5)))
    pids = {r["pid"] for r in rows}
    assert sorted(r["key"] for r in rows) == sorted(f"k{i}" for i in range(24))
    assert 1 < len(pids) <= 3, pids
    assert {int(p.name) for p in tmp_path.iterdir()} == pids, "every actor ran its stage's teardown"
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "the pool's actors ended"
