"""Matched budgets: every arm trains the same number of optimizer steps, and with `tokens` the same number of
supervised tokens (within 1 % or one row), whatever the arms' row counts and lengths."""
from __future__ import annotations

import json
import random

import pytest

from raypipe.experiment.budget import match_budgets, prefix_for_tokens
from raypipe.train.config import TrainConfig


def arms(seed: int = 0) -> dict[str, tuple[list[int], list[int]]]:
    """A: many long traces (R1-like), B: fewer short ones, A-drop: A minus 10 %; prompts of 40-60 tokens."""
    rng = random.Random(seed)

    def rows(n, lo, hi):
        seq = [rng.randint(lo, hi) for _ in range(n)]
        return seq, [s - rng.randint(40, 60) for s in seq]

    a = rows(400, 300, 2000)
    return {"A-all": a, "A-drop": (a[0][:360], a[1][:360]), "B-all": rows(300, 150, 900)}


def train(**kw) -> TrainConfig:
    base = dict(data="d", model="tiny", output="o", max_len=2048, num_workers=2, micro_batch_size=2, grad_accum=2)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("mode,pack", [("steps", False), ("steps", True), ("rows", False), ("rows", True),
                                       ("tokens", True)])
@pytest.mark.parametrize("epochs", [1, 3])
def test_every_arm_trains_the_same_number_of_optimizer_steps(mode, pack, epochs):
    got = match_budgets(arms(), mode, train(pack=pack, epochs=epochs))
    steps = {m["steps"] for m in got.values()}
    assert len(steps) == 1 and steps.pop() > 0, got
    for m in got.values():  # no arm runs out of data before the common step count
        assert m["steps_per_epoch"] * m["epochs"] >= m["steps"]
    if mode == "rows":
        assert len({m["rows"] for m in got.values()}) == 1


def test_tokens_budget_matches_supervised_tokens_within_one_percent_or_one_row():
    data = arms()
    got = match_budgets(data, "tokens", train(pack=True))
    target = min(sum(t) for _, t in data.values())
    for arm, m in got.items():
        longest = max(data[arm][1][:m["rows"]])
        assert abs(m["supervised_tokens"] - target) <= max(0.01 * target, longest), (arm, m, target)
    tokens = [m["supervised_tokens"] for m in got.values()]
    assert (max(tokens) - min(tokens)) / min(tokens) <= 0.01
    assert got["B-all"]["rows"] > got["A-all"]["rows"]  # shorter traces: more rows for the same tokens


def test_max_steps_caps_the_common_budget_and_none_leaves_arms_alone():
    got = match_budgets(arms(), "steps", train(max_steps=3))
    assert {m["steps"] for m in got.values()} == {3}
    free = match_budgets(arms(), "none", train())
    assert len({m["steps"] for m in free.values()}) > 1


def test_prefix_for_tokens_is_within_one_row():
    sup = [10, 20, 30, 40]
    assert prefix_for_tokens(sup, 30) == 2 and prefix_for_tokens(sup, 33) == 2 and prefix_for_tokens(sup, 58) == 3
    assert prefix_for_tokens(sup, 1000) == 4


def test_the_budget_measured_on_ray_predicts_what_sft_trains_on(ray_local, tmp_path, tiny_model_path, shared_data):
    """Lengths come from a Ray Data map over the curated rows (the driver holds ids and integers, not text), the same as
    in process (a small input's way); the sample the
    budget writes is packed by SFT's own data preparation into exactly the rows and tokens the budget predicted."""
    from raypipe.core import io
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate
    from raypipe.experiment.budget import measure, packed_rows, write_sample
    from raypipe.train.data import prepare, source_names

    src = shared_data / "trajectories" / "skyt1_math-correct-5K-27B_math500.jsonl"
    out = tmp_path / "arm"
    run_curate(CurateConfig(input=str(src), output=str(out), rule="keep-all", num_cpus=2, chunk_mb=1))
    storage = io.Storage()
    cfg = train(data=str(tmp_path / "sample"), model=tiny_model_path, max_len=8192, overlong="truncate", pack=True,
                num_workers=1, micro_batch_size=1, grad_accum=1)
    from raypipe.executor import LocalExecutor, RayExecutor

    rows = measure(str(out / "curated"), tiny_model_path, cfg, 0, storage, RayExecutor())
    assert measure(str(out / "curated"), tiny_model_path, cfg, 0, storage, LocalExecutor()).equals(rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert rows.num_rows == manifest["counts"]["kept"] and sorted(rows.column("pos").to_pylist()) == list(
        range(rows.num_rows))
    keys = rows.column("key").to_pylist()
    assert keys == sorted(keys)  # the seeded order
    usable = rows.filter(rows.column("ok"))
    chosen = usable.slice(0, usable.num_rows * 2 // 3)
    assert write_sample(str(out / "curated"), chosen, cfg.data, storage) == chosen.num_rows
    seq = [s for _, s in sorted(zip(chosen.column("pos").to_pylist(), chosen.column("seq").to_pylist()))]
    _, stats = prepare(cfg, tiny_model_path, storage, source_names(cfg.data, storage))
    assert stats["rows_used"] == chosen.num_rows and stats["tokens"] == sum(seq)
    assert stats["train_rows"] == packed_rows(seq, cfg)
    assert len(set(seq)) > 1 and stats["train_rows"] < len(seq)  # rows of many lengths, packed together
