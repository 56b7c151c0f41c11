"""Extending raypipe in one file: a branch proxy with a metric of its own, registered here and nowhere else, runs a
whole curation on Ray (shipped to the workers as a plugin) and is served by the online scorer's model.

This module is also the plugin: `raypipe curate --plugins test_extending` imports it in the driver and ships it to
every Ray worker (runtime_env py_modules), so it imports nothing from the test folder at the top.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raypipe.core.proxies import PROXIES, BranchProxy, as_float

pytestmark = pytest.mark.timeout(300)


@PROXIES.register("questions-per-step")
class QuestionsPerStep(BranchProxy):
    """Question marks per reasoning step: a trajectory that keeps asking itself questions."""

    label = "questions_per_step"
    columns = ("questions_per_step",)
    fields = [("questions_per_step", pa.float64())]

    def measure(self, records: pa.Table, structure: dict[str, pa.Array]) -> dict[str, pa.Array]:
        questions = pc.count_substring(pc.fill_null(records.column("thinking"), ""), "?").to_numpy(
            zero_copy_only=False).astype(np.float64)
        steps = structure["n_steps"].to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_step = np.where(steps > 0, questions / np.maximum(steps, 1), np.nan)
        return {"questions_per_step": pa.array(per_step, mask=np.isnan(per_step))}

    def scores(self, table: pa.Table, policy) -> np.ndarray:
        return as_float(table, "questions_per_step")


def test_a_proxy_registered_in_this_file_curates_end_to_end(spawn, shared_data, tmp_path):
    from raypipe.core.policy import n_to_drop
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.phase2 import rank_columns
    from raypipe.online.scorer import OnlineScorer, ScoreResult, load_run

    args = ["--input", str(shared_data / "trajectories"), "--output", str(tmp_path / "run"), "--num-cpus", "2",
            "--proxy", "questions-per-step", "--plugins", __name__, "--drop-top", "0.2"]
    config = CurateConfig(input="i", output="o", proxy="questions-per-step", plugins=[__name__])
    assert "questions_per_step" in rank_columns(config)  # phase 2 reads the proxy's column
    # The CLI in its own process and its own local Ray, run from this folder, as a user runs it beside a plugin.
    proc = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", *args], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["balanced"] and manifest["policy"]["proxy"] == "questions-per-step"
    assert manifest["config"]["plugins"] == [__name__]

    rows = [r for part in ("curated", "dropped") for f in sorted((tmp_path / "run" / part).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert rows and all("questions_per_step" in r for r in rows)  # measured in the actors by the plugin
    correct = [r for r in rows if r["verdict"] == "correct"]
    assert all(r["branch_score"] == r["questions_per_step"] for r in correct if r["questions_per_step"] is not None)
    for source in {r["source"] for r in correct}:
        mine = [r for r in correct if r["source"] == source]
        dropped = [r for r in mine if r["decision"] == "drop"]
        assert len(dropped) == n_to_drop(0.2, len(mine))
        if dropped:  # the dropped rows are the ones that ask the most questions per step
            kept = [r["questions_per_step"] for r in mine if r["decision"] == "keep"]
            assert min(r["questions_per_step"] for r in dropped) >= max([-1.0, *(k for k in kept if k is not None)])
    assert any(r["decision"] == "drop" and r["reason"].startswith("rule:top") for r in rows)

    # The online scorer decides with the same plugin, and its response model carries the proxy's column.
    assert "questions_per_step" in ScoreResult.model_fields
    scorer = OnlineScorer(load_run(str(tmp_path / "run"))).setup()
    try:
        first = sorted((shared_data / "trajectories").glob("*.jsonl"))[0]
        row = json.loads(first.read_text().splitlines()[0])
        got = scorer.score_rows([row])[0]
    finally:
        scorer.close()
    want = next(r for r in rows if (r["source"], r["id"]) == (row.get("source") or row["model"], row["id"]))
    assert got["questions_per_step"] == want["questions_per_step"] and got["decision"] == want["decision"]
