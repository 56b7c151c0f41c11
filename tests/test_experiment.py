"""The experiment runner: its stages' settings are what each command reads, and end to end on CPU (tiny model) it
is interrupted after one arm's SFT stage, then a rerun finishes without redoing what finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import BENCHMARKS, ROOT, TRAJECTORIES, need_shared_data, raypipe_cli  # noqa: E402

from raypipe.core.errors import ConfigMismatch  # noqa: E402
from raypipe.experiment.config import STANDARD_ARMS, ExperimentConfig  # noqa: E402
from raypipe.experiment.runner import stage_done, stages  # noqa: E402

# One problem set (AIME 2024), two real sources. (The R1 chains in shared/data end inside <think>, so every one is
# `no_answer` and a drop among verified-correct rows would drop nothing: they make a poor source A here.)
SOURCE_A = TRAJECTORIES / "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl"
SOURCE_B = TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl"


def config(out: Path, **kw) -> ExperimentConfig:
    base = dict(output=str(out), source_a=str(SOURCE_A), source_b=str(SOURCE_B), benchmarks=["aime24", "math500"],
                arms=[*STANDARD_ARMS, "A-delete-steps", "base"], curate={"num_cpus": 2},
                train={"max_len": 128, "max_steps": 2}, eval={"backend": "hf", "n": 1, "limit": 1})
    base.update(kw)
    return ExperimentConfig(**base)


def parsed_by_the_cli(stage, tmp_path: Path):
    """The stage's settings as its own command reads them: `raypipe <stage> --config <the YAML the runner writes>`."""
    from raypipe.cli import build_parser
    from raypipe.core import settings

    path = tmp_path / f"{stage.arm}-{stage.stage}.yaml"
    path.write_text(settings.to_yaml(stage.settings))
    return settings.from_args(build_parser().parse_args([stage.stage, "--config", str(path)]))


def test_stages_cover_every_arm_and_each_command_reads_its_settings(tmp_path):
    todo = stages(config(tmp_path))
    by_arm: dict = {}
    for s in todo:
        by_arm.setdefault(s.arm, []).append(s.stage)
    assert by_arm.pop("base") == ["eval"]
    assert all(v == ["curate", "train", "eval"] for v in by_arm.values()) and len(by_arm) == 5
    parsed = {(s.arm, s.stage): parsed_by_the_cli(s, tmp_path) for s in todo}
    assert all(parsed[(s.arm, s.stage)] == s.settings for s in todo)
    rules = {arm: (parsed[(arm, "curate")].rule, parsed[(arm, "curate")].drop_top, parsed[(arm, "curate")].delete_steps)
             for arm in by_arm}
    assert rules == {"A-all": ("keep-all", 0.1, 0.0), "B-all": ("keep-all", 0.1, 0.0),
                     "A-drop-top": ("top", 0.1, 0.0), "A-drop-random": ("random", 0.1, 0.0),
                     "A-delete-steps": ("keep-all", 0.1, 0.1)}
    assert parsed[("B-all", "curate")].input == str(SOURCE_B)
    assert {parsed[(a, "curate")].input for a in by_arm if a != "B-all"} == {str(SOURCE_A)}
    for arm in by_arm:  # each stage reads what the previous one wrote
        assert parsed[(arm, "train")].data == parsed[(arm, "curate")].output
        assert parsed[(arm, "eval")].model == parsed[(arm, "train")].output + "/model"
        assert parsed[(arm, "train")].model == "tiny"
        assert parsed[(arm, "train")].max_steps == 2 and parsed[(arm, "curate")].num_cpus == 2
    assert parsed[("base", "eval")].model == "tiny"
    assert len({s.output for s in todo}) == len(todo), "no two stages share an output"


def test_unknown_arm_and_changed_finished_stage_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown arms"):
        config(tmp_path, arms=["A-all", "C-all"])
    stage = stages(config(tmp_path, arms=["base"]))[0]
    out = Path(stage.output)
    out.mkdir(parents=True)
    (out / "results.json").write_text("{}")
    from raypipe.core.io import Storage

    assert stage_done(stage, Storage())  # a finished stage with no record is trusted
    (out / "_experiment_stage.json").write_text(json.dumps({"argv": ["eval", "--n", "64"], "digest": "other"}))
    with pytest.raises(ConfigMismatch, match="finished with other settings"):
        stage_done(stage, Storage())
    recorded = {"settings": {**stage.view(), "n": 64}}
    (out / "_experiment_stage.json").write_text(json.dumps(recorded))
    with pytest.raises(ConfigMismatch, match="differing: n"):
        stage_done(stage, Storage())
    (out / "_experiment_stage.json").write_text(json.dumps({"settings": stage.view()}))
    assert stage_done(stage, Storage())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_experiment_end_to_end_interrupted_after_sft_then_resumed(tmp_path, tiny_model_path):
    need_shared_data()
    out = tmp_path / "exp"
    cfg = {"name": "e2e", "output": str(out), "model": "tiny", "source_a": str(SOURCE_A), "source_b": str(SOURCE_B),
           "benchmarks": ["aime24", "math500"], "arms": ["A-drop-top", "base"],
           "curate": {"num_cpus": 2, "keep_incorrect": True},
           "train": {"max_len": 128, "overlong": "truncate", "max_steps": 2, "num_workers": 1, "cpus_per_worker": 1,
                     "zero": 0, "num_cpus": 2},
           "eval": {"backend": "hf", "n": 1, "limit": 1, "max_tokens": 8, "temperature": 0,
                    "data_dir": str(BENCHMARKS)}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")

    # Run 1, killed (the whole process group: runner, running stage, its local Ray) once arm 1's SFT has finished.
    first = subprocess.Popen([*raypipe_cli(), "experiment", str(path)], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = out / "arms" / "A-drop-top" / "sft" / "train_summary.json"
    deadline = time.time() + 600
    while not summary.exists():
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.time() < deadline, "SFT stage did not finish"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert not (out / "arms" / "A-drop-top" / "eval" / "results.json").exists(), "the kill must land before eval ends"
    assert not (out / "results.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in [out / "arms" / "A-drop-top" / "curate" / "manifest.json", summary,
                                                  *(out / "arms" / "A-drop-top" / "sft" / "model").iterdir()]}

    # Run 2: curate and SFT of arm 1 are skipped, the rest runs, and the table comes out.
    second = subprocess.run([*raypipe_cli(), "experiment", str(path)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "arm A-drop-top: curate already finished" in log and "arm A-drop-top: train already finished" in log
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    events = [json.loads(line) for line in (out / "experiment_log.jsonl").read_text().splitlines()]
    rerun = {(e["arm"], e["stage"]): e["action"] for e in events[-4:]}
    assert rerun == {("A-drop-top", "curate"): "skipped", ("A-drop-top", "train"): "skipped",
                     ("A-drop-top", "eval"): "ran", ("base", "eval"): "ran"}

    table = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in table["rows"]] == ["A-drop-top", "base"]
    for row in table["rows"]:
        assert set(row["accuracy"]) == {"aime24", "math500"}
        assert all(0.0 <= v <= 1.0 for v in row["accuracy"].values())
        assert row["average"] == pytest.approx(sum(row["accuracy"].values()) / 2)
        assert "eval" in row["links"] and (out / row["links"]["eval"]).is_file()
    arm = table["rows"][0]
    manifest = json.loads((out / "arms" / "A-drop-top" / "curate" / "manifest.json").read_text())
    assert arm["train_rows"] == manifest["counts"]["kept"] and arm["dropped"] == manifest["counts"]["dropped"] > 0
    assert arm["final_loss"] == json.loads(summary.read_text())["final_loss"]
    assert {"curation", "sft", "eval"} <= set(arm["links"])
    html = (out / "results.html").read_text()
    assert "A-drop-top" in html and "arms/A-drop-top/curate/report.html" in html
    assert (out / "results.md").read_text().count("\n| ") == 3  # header + two arms

    # Run 3: everything is done; nothing runs.
    third = subprocess.run([*raypipe_cli(), "experiment", str(path), "--dry-run"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and third.stdout.count(" done ") == 4, third.stdout


@pytest.mark.parametrize("name", ["paper-cpu.yaml", "paper-gpu.yaml"])
def test_shipped_experiment_configs_load_and_their_stages_validate(name, tmp_path):
    from raypipe.experiment.config import load_experiment

    cfg = load_experiment(str(ROOT / "cluster" / "experiments" / name))
    assert set(STANDARD_ARMS) <= set(cfg.arms)
    for stage in stages(cfg):  # every stage's settings validate, and its command reads them back unchanged
        assert parsed_by_the_cli(stage, tmp_path) == stage.settings
    if name == "paper-cpu.yaml":
        need_shared_data()
        assert cfg.model == "tiny"
        for src in (cfg.source_a, cfg.source_b):  # relative to the repository root, where it is run from
            assert (ROOT / src).is_file(), src
