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
from conftest import BENCHMARKS, R1, ROOT, TRAJECTORIES, need_shared_data, raypipe_cli  # noqa: E402

from raypipe.core.errors import ConfigMismatch  # noqa: E402
from raypipe.experiment.config import STANDARD_ARMS, ExperimentConfig  # noqa: E402
from raypipe.experiment.runner import stage_done, stages  # noqa: E402
from test_judge import fixed_server  # noqa: E402,F401  (an OpenAI-compatible server on 127.0.0.1)

# One problem set (AIME 2024), two real sources. (The R1 chains in shared/data end inside <think>, so every one is
# `no_answer` and a drop among verified-correct rows would drop nothing: they make a poor source A here.)
SOURCE_A = TRAJECTORIES / "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl"
SOURCE_B = TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl"


def config(out: Path, **kw) -> ExperimentConfig:
    base = dict(output=str(out), source_a=str(SOURCE_A), source_b=str(SOURCE_B), benchmarks=["aime24", "math500"],
                arms=[*STANDARD_ARMS, "base"], curate={"num_cpus": 2},
                train={"max_len": 128, "max_steps": 2}, eval={"backend": "hf", "n": 1, "limit": 1})
    base.update(kw)
    return ExperimentConfig(**base)


def parsed_by_the_cli(stage, tmp_path: Path):
    """The stage's settings as its own command reads them: `raypipe <stage> --config <the YAML the runner writes>`."""
    from raypipe.cli import build_parser
    from raypipe.core import settings

    path = tmp_path / f"{stage.arm}-{stage.stage}.yaml"
    path.write_text(settings.to_yaml(stage.settings))
    extra = list(stage.settings.inputs) if stage.stage == "pair" else []
    return settings.from_args(build_parser().parse_args([stage.stage, *extra, "--config", str(path)]))


def test_stages_cover_every_arm_and_each_command_reads_its_settings(tmp_path):
    todo = stages(config(tmp_path))
    assert todo[0].stage == "pair" and todo[0].arm == "paired"
    by_arm: dict = {}
    for s in todo[1:]:
        by_arm.setdefault(s.arm, []).append(s.stage)
    assert by_arm.pop("base") == ["eval"]
    assert all(v == ["curate", "train", "eval"] for v in by_arm.values()) and len(by_arm) == 8
    assert [s.stage for s in todo[1:9]] == ["curate"] * 8, "every arm is curated before any trains (the budget)"
    parsed = {(s.arm, s.stage): parsed_by_the_cli(s, tmp_path) for s in todo}
    assert all(parsed[(s.arm, s.stage)] == s.settings for s in todo)
    c = {arm: parsed[(arm, "curate")] for arm in by_arm}
    rules = {arm: (v.rule, v.proxy, v.drop_top, v.delete_steps) for arm, v in c.items()}
    assert rules == {"A-all": ("keep-all", "keyword-share", 0.1, 0.0), "B-all": ("keep-all", "keyword-share", 0.1, 0.0),
                     "A-drop-top-keyword": ("top", "keyword-share", 0.1, 0.0),
                     "A-drop-top-step-ratio": ("top", "step-ratio", 0.1, 0.0),
                     "A-drop-random": ("random", "keyword-share", 0.1, 0.0),
                     "A-drop-longest": ("longest", "keyword-share", 0.1, 0.0),
                     "A-delete-steps": ("keep-all", "keyword-share", 0.1, 0.1),
                     "B-delete-steps": ("keep-all", "keyword-share", 0.1, 0.1)}
    paired = parsed[("paired", "pair")]
    assert paired.inputs == [str(SOURCE_A), str(SOURCE_B)] and paired.key == "problem_id"
    inputs = {arm: v.input for arm, v in c.items()}
    assert {inputs[a] for a in by_arm if a.startswith("B-")} == {paired.output + "/inputs/B"}
    assert {inputs[a] for a in by_arm if a.startswith("A-")} == {paired.output + "/inputs/A"}
    assert c["A-drop-top-step-ratio"].reference_input == paired.output + "/inputs/B"
    assert all(c[a].reference_input is None for a in by_arm if a != "A-drop-top-step-ratio")
    for arm in by_arm:  # each stage reads what the previous one wrote; the same prompt in training and evaluation
        assert parsed[(arm, "train")].data == parsed[(arm, "curate")].output
        assert parsed[(arm, "eval")].model == parsed[(arm, "train")].output + "/model"
        assert parsed[(arm, "train")].model == "tiny"
        assert parsed[(arm, "train")].max_steps == 2 and parsed[(arm, "curate")].num_cpus == 2
        assert parsed[(arm, "train")].prompt_version == parsed[(arm, "eval")].prompt_version
    assert parsed[("base", "eval")].model == "tiny"
    assert len({s.output for s in todo}) == len(todo), "no two stages share an output"
    unpaired = stages(config(tmp_path, pair_by="none", arms=["A-all", "B-all"]))
    assert [s.settings.input for s in unpaired if s.stage == "curate"] == [str(SOURCE_A), str(SOURCE_B)]


def test_seeds_repeat_training_and_evaluation_and_eval_grades_as_curation(tmp_path):
    cfg = config(tmp_path, arms=["A-all", "A-drop-random", "base"], seeds=[3, 5],
                 curate={"num_cpus": 2, "answer_from": "final-or-thinking"})
    todo = stages(cfg)
    curate = [s for s in todo if s.stage == "curate"]
    assert [s.arm for s in curate] == ["A-all", "A-drop-random"], "curation once per arm, whatever the seeds"
    assert {s.settings.seed for s in curate} == {0}
    runs = [(s.arm, s.stage, s.seed, s.settings.seed) for s in todo if s.stage in ("train", "eval")]
    assert runs == [(a, st, k, k) for a in ("A-all", "A-drop-random") for k in (3, 5) for st in ("train", "eval")] + \
        [("base", "eval", 3, 3), ("base", "eval", 5, 5)]
    outputs = {(s.arm, s.stage, s.seed): s.output for s in todo if s.seed is not None}
    assert outputs[("A-all", "train", 5)] == str(tmp_path / "arms" / "A-all" / "seed-5" / "sft")
    evals = [s for s in todo if s.stage == "eval"]
    assert {s.settings.answer_from for s in evals} == {"final-or-thinking"}
    assert evals[1].settings.model == outputs[("A-all", "train", 5)] + "/model"
    with pytest.raises(ValueError, match="answer_from"):
        config(tmp_path, curate={"answer_from": "final-or-thinking"}, eval={"answer_from": "final"})
    with pytest.raises(ValueError, match="distinct"):
        config(tmp_path, seeds=[1, 1])


def test_a_setting_added_since_a_stage_finished_does_not_refuse_it_at_its_default(tmp_path):
    from raypipe.core.io import Storage

    stage = next(s for s in stages(config(tmp_path, arms=["A-all"], pair_by="none")) if s.stage == "train")
    out = Path(stage.output)
    out.mkdir(parents=True)
    (out / "train_summary.json").write_text("{}")
    older = {k: v for k, v in stage.view().items() if k not in ("shuffle_buffer", "report_every")}
    (out / "_experiment_stage.json").write_text(json.dumps({"settings": older}))
    assert stage_done(stage, Storage())
    (out / "_experiment_stage.json").write_text(json.dumps({"settings": {**older, "lr": 1.0}}))
    with pytest.raises(ConfigMismatch, match="differing: lr"):
        stage_done(stage, Storage())


def test_controlled_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="prompt_version"):
        config(tmp_path, train={"prompt_version": "v1-raw"}, eval={"prompt_version": "v1"})
    with pytest.raises(ValueError, match="template must be auto"):
        config(tmp_path, train={"template": "plain"})
    with pytest.raises(ValueError, match="needs train.pack"):
        config(tmp_path, budget="tokens")
    with pytest.raises(ValueError, match="max_model_len"):
        config(tmp_path, eval={"max_model_len": 4096, "max_tokens": 4096})
    one = config(tmp_path, eval={"prompt_version": "v1-raw"})
    assert {s.settings.prompt_version for s in stages(one) if s.stage in ("train", "eval")} == {"v1-raw"}


def test_unknown_arm_and_changed_finished_stage_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown arms"):
        config(tmp_path, arms=["A-all", "C-all"])
    stage = stages(config(tmp_path, arms=["base"], pair_by="none"))[0]
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
@pytest.mark.study
@pytest.mark.timeout(1800)
def test_the_cpu_study_end_to_end_interrupted_after_sft_then_resumed(spawn, tmp_path, tiny_model_path):
    """cluster/experiments/paper-cpu.yaml (R1 against Sky-T1 on AIME 2024, paired by id), with four of its arms and
    max_steps: 1 per arm: killed once the first arm's SFT has finished, then resumed to the table."""
    need_shared_data()
    if not R1.is_dir():
        pytest.skip("no R1 chains in the shared data")
    cfg = yaml.safe_load((ROOT / "cluster" / "experiments" / "paper-cpu.yaml").read_text())
    out = tmp_path / "exp"
    cfg.update(output=str(out), source_a=str(ROOT / cfg["source_a"]), source_b=str(ROOT / cfg["source_b"]))
    # Three trained arms prove what eight would (pairing, two drop rules and their overlap, the untrained base): every
    # arm runs the same three stages, whatever its curation settings (the stage test checks each arm's settings).
    cfg["arms"] = ["A-all", "A-drop-top-keyword", "A-drop-random", "base"]
    cfg["train"].update(max_steps=1)
    cfg["eval"].update(limit=1, max_tokens=4, data_dir=str(BENCHMARKS))
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")

    # Run 1, killed (the whole process group: runner, running stage, its local Ray) once arm 1's SFT has finished.
    first = subprocess.Popen([*raypipe_cli(), "experiment", str(path)], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = out / "arms" / "A-all" / "sft" / "train_summary.json"
    deadline = time.time() + 1200
    while not summary.exists():
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.time() < deadline, "the first SFT stage did not finish"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert not (out / "results.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in [out / "paired" / "pairing.json", out / "budget" / "budget.json",
                                                  out / "arms" / "A-all" / "curate" / "manifest.json", summary]}

    # Run 2: pairing, curation, the budget and arm 1's SFT are reused; the rest runs; the table comes out.
    second = subprocess.run([*raypipe_cli(), "experiment", str(path)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1500)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "arm paired: pair already finished" in log and "arm A-all: train already finished" in log
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was rewritten"

    pairing = json.loads((out / "paired" / "pairing.json").read_text())
    assert pairing["key"] == "id" and 0 < pairing["paired"] < 30
    paired_ids = set(pairing["paired_keys"])
    for name in ("A", "B"):  # the arms' inputs hold the paired problems only
        rows = [json.loads(line) for f in (out / "paired" / "inputs" / name).iterdir() for line in f.open()]
        assert {r["id"] for r in rows} == paired_ids
    budget = json.loads((out / "budget" / "budget.json").read_text())
    arms = [a for a in cfg["arms"] if a != "base"]
    assert budget["mode"] == "tokens" and set(budget["arms"]) == set(arms)
    assert {budget["arms"][a]["steps"] for a in arms} == {1} and budget["common_steps"]
    table = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in table["rows"]] == cfg["arms"]
    for row in table["rows"]:
        assert set(row["accuracy"]) == {"aime24", "math500"} and "eval" in row["links"]
        assert all(0.0 <= v <= 1.0 for v in row["accuracy"].values())
        if row["arm"] != "base":
            assert row["steps"] == 1 and {"curation", "sft", "eval"} <= set(row["links"])
            assert row["overlong_before"] is not None and row["overlong_after"] is not None
            for link in row["links"].values():
                assert (out / link).is_file(), link
    drops = table["drop_overlap"]
    assert set(drops["arms"]) == {"A-drop-top-keyword", "A-drop-random"}
    assert len(drops["jaccard"]) == 1 and all(n >= 1 for n in drops["dropped"].values())
    assert table["prompt"]["same_in_training_and_evaluation"] and table["budget"]["warning"]
    html = (out / "results.html").read_text()
    assert "Jaccard" in html and "paired/pairing.json" in html and "arms/A-drop-random/curate/report.html" in html
    # the step judge of each teacher's paired traces (keyword on CPU): its figures beside the table, its reports linked
    assert set(table["judge"]) == {"A", "B"} and "judge/A/report.html" in html and "Propose share" in html
    for name in ("A", "B"):
        (figures,) = table["judge"][name]["sources"].values()
        assert figures["trajectories"] == len(paired_ids) and figures["steps"] > 0

    # Run 3: everything is done; nothing runs.
    third = subprocess.run([*raypipe_cli(), "experiment", str(path), "--dry-run"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and third.stdout.count(" done ") == 1 + 3 * len(arms) + 1 + 2, third.stdout


def test_an_openai_compatible_judge_stage_runs_in_the_experiment(tmp_path, fixed_server):
    """The judge section as paper-gpu.yaml writes it, pointed at an OpenAI-compatible server on 127.0.0.1: each
    source's traces are labelled through the real `raypipe judge` command, and the table reads the figures."""
    from raypipe.core import io
    from raypipe.experiment.runner import judge_stages, run_stage
    from raypipe.experiment.table import judge_summaries

    need_shared_data()
    gpu = yaml.safe_load((ROOT / "cluster" / "experiments" / "paper-gpu.yaml").read_text())["judge"]
    cfg = config(tmp_path / "exp", pair_by="none", judge={**gpu, "endpoint": fixed_server, "model": None,
                                                          "limit": 3, "num_cpus": 2})
    assert cfg.judge.backend == "openai" and cfg.judge.json_mode
    todo = judge_stages(cfg)
    assert [s.arm for s in todo] == ["judge-A", "judge-B"]
    for stage in todo:
        run_stage(stage, io.Storage())
        assert stage_done(stage, io.Storage())
    judged = judge_summaries(cfg.output, io.Storage())
    for name in ("A", "B"):
        (figures,) = judged[name]["sources"].values()
        assert figures["trajectories"] == 3 and figures["unlabelled_rate"] == 0 and figures["request_failure_rate"] == 0
        assert 0 < figures["propose_share"] < 1
        assert judged[name]["judge"] == f"openai:{fixed_server}"


@pytest.mark.parametrize("name", ["paper-cpu.yaml", "paper-gpu.yaml", "organism-quick.yaml", "organism-cpu.yaml",
                                  "organism-gpu.yaml"])
def test_shipped_experiment_configs_load_and_their_stages_validate(name, tmp_path, monkeypatch):
    from raypipe.experiment.config import load_experiment

    # The GPU config's S3 folders cannot be reached from here: one attempt, not the client's eight.
    monkeypatch.setenv("RAYPIPE_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    cfg = load_experiment(str(ROOT / "cluster" / "experiments" / name))
    if name.startswith("organism"):  # the organism's arms, seeds and task stage
        assert cfg.task is not None and cfg.benchmarks == ["organism", "organism_hard"]
        assert "base" in cfg.arms and (name == "organism-quick.yaml" or len(cfg.seeds) >= 3)
    else:
        assert set(STANDARD_ARMS) <= set(cfg.arms)
    for stage in stages(cfg):  # every stage's settings validate, and its command reads them back unchanged
        assert parsed_by_the_cli(stage, tmp_path) == stage.settings
    if name == "paper-cpu.yaml":
        need_shared_data()
        assert cfg.model == "tiny" and cfg.pair_by == "id" and "base" in cfg.arms
        for src in (cfg.source_a, cfg.source_b):  # relative to the repository root, where it is run from
            assert (ROOT / src).is_file(), src


def test_plan_of_the_gpu_config_prints_per_stage_tokens_and_gpu_hours(spawn, tmp_path):
    """`raypipe experiment plan` on paper-gpu.yaml as written: its S3 sources cannot be read here, so the counts
    come from the stated assumptions within the time limit; every stage has tokens and GPU-hours."""
    out = subprocess.run([*raypipe_cli(), "experiment", "plan", str(ROOT / "cluster" / "experiments" /
                                                                    "paper-gpu.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true", RAYPIPE_S3_MAX_ATTEMPTS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "student parameters 7.62B" in lines[0]
    rows = {(ln.split()[0], ln.split()[1]): ln.split() for ln in lines if ln.split()[:1] in (["train"], ["eval"],
                                                                                           ["curate"], ["pair"],
                                                                                           ["judge"])}
    from raypipe.experiment.config import load_experiment

    cfg = load_experiment(str(ROOT / "cluster" / "experiments" / "paper-gpu.yaml"))
    assert {a for s, a in rows if s == "train"} == set(cfg.arms) - {"base"}
    assert {a for s, a in rows if s == "eval"} == set(cfg.arms)
    for (stage, arm), cells in rows.items():
        tokens, hours = cells[3], float(cells[4])
        assert tokens != "-", (stage, arm)
        assert (hours > 0) == (stage in ("train", "eval")), (stage, arm, hours)
    assert {a for s, a in rows if s == "judge"} == {"judge-A", "judge-B"}
    assert all(rows[("judge", a)][2] == "2.00k" for a in ("judge-A", "judge-B"))  # limit: 2000 per teacher
    train = [float(rows[("train", a)][4]) for a in cfg.arms if a != "base"]
    assert max(train) == pytest.approx(min(train)), "matched budgets: every arm costs the same"
    total = float(next(ln for ln in lines if ln.startswith("total:")).split()[1])
    assert total == pytest.approx(sum(float(c[4]) for c in rows.values()), rel=0.01)
    assert "assumed" in out.stdout


def test_plan_of_an_unreachable_s3_source_answers_in_seconds_with_the_reason(tmp_path, monkeypatch):
    """A closed port on 127.0.0.1 as the S3 endpoint: the plan says what it reads first, gives up on each read at
    once (a short connect timeout, one attempt), and names the error, not just 'not readable'."""
    import socket

    from raypipe.experiment.config import load_experiment
    from raypipe.experiment.plan import estimate, probes, to_text

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("RAYPIPE_S3_MAX_ATTEMPTS", raising=False)  # the client's own eight attempts otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "output": "s3://runs/exp", "model": "s3://models/m", "source_a": "s3://data/a/", "source_b": "s3://data/b/",
        "s3_endpoint": f"http://127.0.0.1:{port}", "arms": ["A-all", "B-all"], "cost": {"read_timeout_s": 30}}))
    cfg = load_experiment(str(path))
    said = probes(cfg)
    assert "s3://data/a/" in said and "s3://data/b/" in said and "s3://models/m/config.json" in said
    t0 = time.monotonic()
    plan = estimate(cfg, stages)
    assert time.monotonic() - t0 < 10, "each read must give up at once, not after retries or the 30 s bound"
    assert set(plan["unreadable_sources"]) == {"A", "B"}
    for name in ("A", "B"):
        assert "connect" in plan["unreadable_sources"][name]["error"].lower(), plan["unreadable_sources"][name]
    text = to_text(plan)
    assert "source A (s3://data/a/) not readable: " in text and "NETWORK_CONNECTION" in text
    assert "config.json" in plan["parameters_from"] and "connect" in plan["parameters_from"].lower()
