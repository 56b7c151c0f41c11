"""One definition per setting: every command's CLI comes from its model, the experiment passes typed settings to its
stages, and what earlier releases wrote (config hashes, stage records, flag spellings) still means the same."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from raypipe.cli import build_parser
from raypipe.commands import commands
from raypipe.core.flags import HIDDEN
from raypipe.core.registry import registry_of
from raypipe.core.settings import field_registry

ROOT = Path(__file__).resolve().parents[1]


def all_commands():
    for c in commands():
        yield c.name, c
        for sc in c.subcommands:
            yield f"{c.name} {sc.name}", sc


def parser_of(path: str) -> argparse.ArgumentParser:
    p = build_parser()
    for word in path.split():
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[word]
    return p


@pytest.mark.parametrize("path,command", list(all_commands()), ids=[n for n, _ in all_commands()])
def test_every_field_of_every_command_has_a_flag_with_its_description(path, command):
    parser = parser_of(path)
    by_dest = {a.dest: a for a in parser._actions}
    fields = dict(command.model.model_fields)
    for name, field in list(fields.items()):  # a nested settings model: a dotted flag per field of it
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            assert field.description, f"{path}: field {name} has no description"
            fields.pop(name)
            fields.update({f"{name}.{k}": f for k, f in field.annotation.model_fields.items()})
    for name, field in fields.items():
        assert field.description, f"{path}: field {name} has no description"
        action = by_dest.get(name)
        assert action is not None, f"{path}: field {name} has no flag"
        if action.option_strings:
            assert f"--{name.replace('_', '-')}" in action.option_strings, (name, action.option_strings)
        if HIDDEN in field.metadata:  # accepted, not shown
            assert action.help == argparse.SUPPRESS, (name, action.help)
            continue
        assert field.description.split("(")[0].strip()[:40] in action.help, (name, action.help)
        registry = field_registry(field, command.model, name)
        if registry is not None:  # choices come from the registry
            assert action.metavar == "{" + ",".join(registry.names()) + "}"


def test_help_of_every_command_prints(spawn):
    for path, _ in all_commands():
        out = subprocess.run([sys.executable, "-m", "raypipe.cli", *path.split(), "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and "--" in out.stdout, (path, out.stderr[-500:])


@pytest.mark.parametrize("argv,field,value", [
    (["curate", "--input", "i", "--output", "o", "--verify-timeout", "2.5"], "verify_timeout_s", 2.5),
    (["serve", "--manifest", "m", "--retry-after", "3"], "retry_after_s", 3.0),
    (["serve", "--manifest", "m", "--batch-wait", "0.01"], "batch_wait_s", 0.01),
    (["judge", "--input", "i", "--output", "o", "--timeout", "7"], "request_timeout_s", 7.0),
    # settings now shared (one definition each), under their shared names; the old spellings still work
    (["judge", "--input", "i", "--output", "o", "--timeout-s", "7"], "request_timeout_s", 7.0),
    (["judge", "--input", "i", "--output", "o", "--max-retries", "5"], "retries", 5),
    (["judge", "--input", "i", "--output", "o", "--max-steps", "9"], "max_judged_steps", 9),
    (["loss-probe", "--input", "i", "--output", "o", "--max-tokens", "99"], "max_scored_tokens", 99),
    (["train", "--data", "d", "--model", "m", "--output", "o", "--storage", "s3://b/ckpt"], "checkpoint_storage",
     "s3://b/ckpt"),
    (["serve-model", "--model", "m", "--name", "x"], "served_model_name", "x"),
    (["serve-model", "--model", "m", "--ray-cpus", "4"], "num_cpus", 4),
    (["serve-model", "--model", "m", "--num-cpus", "0.25"], "replica_cpus", 0.25),
    (["diagnose", "--sources", "A,B", "--judge", "j", "--output", "o.html"], "judge_outputs", ["j"]),
    (["eval", "--model", "m", "--output", "o", "--request-timeout", "9"], "request_timeout_s", 9.0),
    (["eval", "--model", "m", "--output", "o", "--benchmark-file", "aime24=a.jsonl", "--benchmark-file",
      "math500=s3://b/m.jsonl"], "benchmark_files", {"aime24": "a.jsonl", "math500": "s3://b/m.jsonl"}),
    (["eval", "--model", "m", "--output", "o", "--no-size-check"], "size_check", False),
    (["train", "--data", "d", "--model", "m", "--output", "o", "--no-gradient-checkpointing"],
     "gradient_checkpointing", False),
    (["curate", "--input", "i", "--output", "o", "--keep-incorrect"], "keep_incorrect", True),
])
def test_earlier_flag_spellings_still_work(argv, field, value):
    from raypipe.core import settings

    model = settings.from_args(build_parser().parse_args(argv))
    assert getattr(model, field) == value


def test_a_config_file_and_flags_are_one_validation(tmp_path):
    from raypipe.core import settings

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"input": "from-file", "output": "o", "drop_top": 0.3, "keep-incorrect": True}))
    model = settings.from_args(build_parser().parse_args(["curate", "--config", str(path), "--drop-top", "0.2"]))
    assert (model.input, model.drop_top, model.keep_incorrect) == ("from-file", 0.2, True)  # flags win
    path.write_text(yaml.safe_dump({"input": "i", "output": "o", "drop_tpo": 0.3}))
    with pytest.raises(ValidationError, match="drop_tpo"):
        settings.from_args(build_parser().parse_args(["curate", "--config", str(path)]))
    with pytest.raises(ValidationError, match="rule"):
        settings.load(build_parser().parse_args(["curate"])._settings_model, None,
                      {"input": "i", "output": "o", "rule": "no-such-rule"})


def experiment_yaml(tmp_path: Path, **sections) -> Path:
    cfg = {"output": str(tmp_path / "exp"), "source_a": "a.jsonl", "source_b": "b.jsonl", "arms": ["A-drop-top"],
           **sections}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_experiment_rejects_a_misspelled_stage_key_naming_it(spawn, tmp_path):
    path = experiment_yaml(tmp_path, train={"max_len": 256, "gradient_checkpionting": False})
    out = subprocess.run([sys.executable, "-m", "raypipe.cli", "experiment", str(path), "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "train.gradient_checkpionting" in out.stderr, out.stderr
    path = experiment_yaml(tmp_path, eval={"request_timeout_s": 30}, curate={"num_cpus": 1})
    out = subprocess.run([sys.executable, "-m", "raypipe.cli", "experiment", str(path), "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "request_timeout_s: 30.0" in out.stdout, out.stdout + out.stderr
    assert "gradient_checkpointing: true" in out.stdout  # the dry run shows effective settings, false ones too


def other_value(field, default, model=None, name=None):
    """A valid value of this field that differs from its default (None: the field has only one valid value)."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (
        typing.Union, getattr(__import__("types"), "UnionType")) else [ann]
    base = args[0] if args else ann
    if typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    registry = field_registry(field, model, name)
    if registry is not None:
        return [n for n in registry.names() if n != default]
    if typing.get_origin(base) is typing.Literal:
        return [v for v in typing.get_args(base) if v != default]
    if base is bool:
        return [not default]
    lo = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    gt = next((m.gt for m in field.metadata if isinstance(m, annotated_types.Gt)), None)
    hi = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    lt = next((m.lt for m in field.metadata if isinstance(m, annotated_types.Lt)), None)
    if base is int:
        start = default if isinstance(default, int) and not isinstance(default, bool) else (lo or gt or 1)
        cands = [start + 1, start + 2, max(1, start - 1)]
    elif base is float:
        start = default if isinstance(default, (int, float)) else 0.5
        cands = [round(start * 0.5 + 0.05, 4), round(start + 0.1, 4), 0.25, round(start + 1.0, 4)]
    elif base is str:
        return ["switch", "line", "x-value", "auto"]
    elif typing.get_origin(base) is list:
        return [["math500", "aime24"], ["x", "y"]]
    elif typing.get_origin(base) is dict:
        return [{"aime24": "x.jsonl"}, {"k": "v"}, {"problem": "question", "response": "messages[-1].content"}]
    else:
        return []
    return [c for c in cands if c != default and (lo is None or c >= lo) and (gt is None or c > gt)
            and (hi is None or c <= hi) and (lt is None or c < lt)]


def test_every_field_of_every_stage_reaches_that_stage(tmp_path):
    from raypipe.core import settings
    from raypipe.experiment.config import STAGE_MODELS, load_experiment
    from raypipe.experiment.runner import stages

    from raypipe.experiment.config import ExperimentConfig

    def section_of(stage):  # `judge: JudgeSection | None` (no judge stage when unset)
        annotation = ExperimentConfig.model_fields[stage].annotation
        return next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)

    reached, fixed, skipped = {}, [], []
    set_by_arm = {("curate", "rule")}  # the arm below (A-all) fixes its rule; `plugins` are modules to import
    for stage, model in STAGE_MODELS.items():
        section = section_of(stage)
        for name, field in section.model_fields.items():
            if (stage, name) in set_by_arm or name == "plugins":
                skipped.append((stage, name))
                continue
            default = model.model_fields[name].get_default(call_default_factory=True)
            for value in other_value(model.model_fields[name], default, model, name):
                try:
                    cfg = load_experiment(str(experiment_yaml(tmp_path, arms=["A-all"], **{stage: {name: value}})))
                    got = next(s for s in stages(cfg) if s.stage == stage)
                except (ValidationError, ValueError):
                    continue
                # the value arrives in the stage's settings and in the YAML file the stage's command reads
                (tmp_path / "stage.yaml").write_text(settings.to_yaml(got.settings))
                loaded = settings.load(model, str(tmp_path / "stage.yaml"))
                assert getattr(got.settings, name) == getattr(loaded, name) == model.model_validate(
                    {**got.settings.model_dump(), name: value}).__dict__[name], (stage, name, value)
                reached[(stage, name)] = value
                break
            else:
                fixed.append((stage, name))
    sections = sum(len(section_of(s).model_fields) for s in STAGE_MODELS)
    assert len(reached) + len(fixed) + len(skipped) == sections and len(reached) > 60, len(reached)
    # one valid value each today (grader, the prompt versions the candidates do not name); the experiment holds
    # train.template at auto (evaluation renders through the chat template) and eval.max_model_len above max_tokens;
    # judge.backend alone: another backend needs its endpoint (openai) or model (vllm) beside it
    assert set(fixed) <= {("eval", "prompt_version"), ("train", "prompt_version"), ("curate", "grader"),
                          ("eval", "grader"), ("train", "template"), ("eval", "max_model_len"),
                          ("judge", "backend")}, fixed
    assert ("judge", "endpoint") in reached and ("judge", "limit") in reached


# What the previous release (before settings models) computed; earlier runs resume only if these hold.
def test_config_hashes_of_earlier_runs_are_unchanged():
    from raypipe.curate.config import CurateConfig
    from raypipe.eval.config import EvalConfig

    assert CurateConfig(input="in", output="out").hash() == "a58b91e129192aeb"
    assert CurateConfig(input="s3://b/raw/", output="s3://b/cur/", rule="random", drop_top=0.2, lexicon="switch",
                        seed=3, keep_incorrect=True, delete_steps=0.1, verify_timeout_s=2.5).hash() == "f4b022f70edf5d94"
    assert EvalConfig(model="tiny", output="o", n=2, limit=5, max_tokens=64).hash() == "a31ddf92f80efaa8"
    assert CurateConfig(input="in", output="out", proxy="markers-per-1k").hash() != "a58b91e129192aeb"


LEGACY = {  # stage records of cluster/experiments/paper-cpu.yaml's first arm, as the previous release wrote them
    "curate": ["curate", "--input", "../shared/data/trajectories/skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl",
               "--num-cpus", "2", "--keep-incorrect", "--rule", "keep-all", "--output",
               "demo-output/experiment-cpu/arms/A-all/curate"],
    "train": ["train", "--seed", "0", "--max-len", "128", "--overlong", "truncate", "--epochs", "1", "--num-workers",
              "1", "--cpus-per-worker", "1", "--zero", "0", "--num-cpus", "2", "--data",
              "demo-output/experiment-cpu/arms/A-all/curate", "--model", "tiny", "--output",
              "demo-output/experiment-cpu/arms/A-all/sft"],
}


def test_an_experiment_folder_of_the_previous_release_still_resumes(tmp_path):
    from raypipe.core.io import Storage
    from raypipe.experiment.config import load_experiment
    from raypipe.core.errors import ConfigMismatch
    from raypipe.experiment.runner import stage_done, stages

    # the previous release's paper-cpu.yaml (no pairing, no budget then)
    previous = {"name": "branching-study-cpu", "output": "demo-output/experiment-cpu", "model": "tiny",
                "source_a": "../shared/data/trajectories/skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl",
                "source_b": "../shared/data/trajectories/skyt1_math-correct-5K-14B_aime24.jsonl",
                "benchmarks": ["aime24", "math500"], "arms": ["A-all"], "pair_by": "none", "budget": "none",
                "curate": {"num_cpus": 2, "keep_incorrect": True},
                "train": {"max_len": 128, "overlong": "truncate", "epochs": 1, "num_workers": 1, "cpus_per_worker": 1,
                          "zero": 0, "num_cpus": 2}}
    (tmp_path / "previous.yaml").write_text(yaml.safe_dump(previous))
    cfg = load_experiment(str(tmp_path / "previous.yaml"))
    by_stage = {s.stage: s for s in stages(cfg)}
    for name, argv in LEGACY.items():
        stage = by_stage[name].model_copy(update={"output": str(tmp_path / name)})
        out = Path(stage.output)
        out.mkdir(parents=True)
        (out / {"curate": "manifest.json", "train": "train_summary.json"}[name]).write_text("{}")
        (out / "_experiment_stage.json").write_text(json.dumps({"argv": argv, "digest": "legacy"}))
        assert stage_done(stage, Storage()), name
        changed = [*argv[:-1], argv[-1] + "-elsewhere"] if name == "curate" else [*argv, "--lr", "0.5"]
        (out / "_experiment_stage.json").write_text(json.dumps({"argv": changed, "digest": "legacy"}))
        with pytest.raises(ConfigMismatch):
            stage_done(stage, Storage())


# ---- what a new user reads: --help pages, unknown flags, errors ------------------------------------------------

PY_PLACEHOLDER = re.compile(r"(?<![\w{,|-])(str|int|float|bool|list\[[^\]]*\]|dict\[[^\]]*\]|Any|JSON\w*)(?![\w}])")


def help_text(path: str) -> str:
    return parser_of(path).format_help() if path else build_parser().format_help()


@pytest.mark.parametrize("path", [""] + [n for n, _ in all_commands()])
def test_every_help_page_reads_for_a_user(path):
    """No Python type as a placeholder, no default shown twice or as None, no hidden flag, and an example that
    the parser takes as it is written."""
    text = help_text(path)
    parser = parser_of(path) if path else build_parser()
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and action.metavar is not None:
            shown = str(action.metavar)
            if not shown.startswith("{") and shown != "JSON":
                assert not PY_PLACEHOLDER.search(shown), (path, action.option_strings, shown)
        if action.help and action.help != argparse.SUPPRESS:
            appended = re.search(r" \(default: [^()]*\)$", action.help)  # the model's default, after the text
            assert not appended or "default" not in action.help[:appended.start()], (path, action.help)
            assert "(default: None)" not in action.help, (path, action.option_strings, action.help)
    usage = text.split("\n\n")[0]
    assert not re.search(r"\[--[\w.-]+ (str|int|float|list\[|dict\[)", usage), usage
    assert "example:" in text, path
    examples = [ln.strip() for ln in text.split("example:", 1)[1].splitlines() if ln.strip().startswith("raypipe ")]
    assert examples, path
    for line in (x for x in examples if "--help" not in x):
        args, extras = build_parser().parse_known_args(shlex.split(line)[1:])
        assert not extras, (line, extras)
    assert "--fault-at-step" not in text
    assert "console script" not in text and "raypipe/commands" not in text  # the description is for users


def test_a_hidden_setting_is_still_accepted():
    from raypipe.core import settings

    args = build_parser().parse_args(["train", "--data", "d", "--model", "m", "--output", "o", "--fault-at-step", "3"])
    assert settings.from_args(args).fault_at_step == 3


def test_a_misspelled_flag_gets_the_commands_usage_and_a_suggestion(capsys):
    from raypipe.commands import parse

    with pytest.raises(SystemExit) as e:
        parse(build_parser(), ["curate", "--input", "i", "--drop-tpo", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("usage: raypipe curate") and "did you mean --drop-top?" in err, err
    with pytest.raises(SystemExit):
        parse(build_parser(), ["eval", "compare", "a", "b", "--metrc", "pass@1"])
    err = capsys.readouterr().err
    assert err.startswith("usage: raypipe eval compare") and "did you mean --metric?" in err, err


def test_errors_name_the_flag_on_the_command_line_and_the_key_in_yaml(tmp_path, capsys):
    from raypipe.commands import execute, parse

    assert execute(parse(build_parser(), ["curate", "--input", "i", "--output", "o", "--drop-top", "1.5"])) == 2
    err = capsys.readouterr().err
    assert "--drop-top: Input should be less than or equal to 1" in err and "drop_top" not in err, err
    path = tmp_path / "c.yaml"
    path.write_text("input: i\noutput: o\ndrop_top: 1.5\nkeep_incorect: true\n")
    assert execute(parse(build_parser(), ["curate", "--config", str(path)])) == 2
    err = capsys.readouterr().err
    assert f"drop_top (in {path}): Input should be" in err and "--drop-top" not in err, err
    assert "keep_incorect" in err and "did you mean keep_incorrect?" in err, err
    assert execute(parse(build_parser(), ["curate", "--input", "i", "--output", "o", "--fields", "a=b,c"])) == 2
    assert capsys.readouterr().err.startswith("raypipe curate: --fields: expects FIELD=PATH,...")


def test_input_a_command_cannot_use_is_refused_in_one_line_with_exit_2(tmp_path, capsys):
    from raypipe.commands import execute, parse

    missing = tmp_path / "no-such-run"
    assert execute(parse(build_parser(), ["eval", "compare", str(missing), str(missing)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raypipe eval compare: ") and str(missing) in err and "Traceback" not in err, err
    assert execute(parse(build_parser(), ["inspect", str(missing), "--worst", "3"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raypipe inspect: ") and len(err.splitlines()) == 1, err
    # Training data that is not there is refused before Ray starts (this tier fails a test that starts Ray).
    assert execute(parse(build_parser(), ["train", "--data", str(missing), "--model", "tiny", "--output",
                                          str(tmp_path / "sft")])) == 2
    assert capsys.readouterr().err.strip() == f"raypipe train: training data not found: {missing}"
    assert execute(parse(build_parser(), ["loss-probe", "--input", str(missing), "--model", "tiny", "--output",
                                          str(tmp_path / "loss")])) == 2
    assert capsys.readouterr().err.strip() == f"raypipe loss-probe: input not found: {missing}"
    # A model path that is not there is named as such (not looked up on the hub as a repo id).
    problems = tmp_path / "math500.jsonl"
    problems.write_text('{"problem": "1+1?", "answer": "2"}\n')
    assert execute(parse(build_parser(), ["eval", "--model", str(missing), "--benchmarks", "math500",
                                          "--benchmark-file", f"math500={problems}", "--no-size-check", "--output",
                                          str(tmp_path / "eval")])) == 2
    assert capsys.readouterr().err.strip() == f"raypipe eval: model not found: {missing}"
    (tmp_path / "data").mkdir()
    assert execute(parse(build_parser(), ["train", "--data", str(tmp_path / "data"), "--model", str(missing),
                                          "--output", str(tmp_path / "sft")])) == 2
    assert capsys.readouterr().err.strip() == f"raypipe train: model not found: {missing}"


@pytest.mark.parametrize("text,line", [("input: x\noutput: [y\n", 3), ("a: b\n  c: d\n", 2), ('input: "x\n', 2)])
def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path, capsys, text, line):
    from raypipe.commands import execute, parse

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert execute(parse(build_parser(), ["curate", "--config", str(path)])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"raypipe curate: {path}, line {line}, column ") and "not valid YAML" in err, err


def test_the_readme_runs_as_written_after_make_demo():
    """Its command lines name the installed script (`raypipe` is not on PATH after `make demo`), and a benchmark
    whose file is not `<name>.jsonl` has its file named."""
    from raypipe.eval.benchmarks import REGISTRY

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S)
    bare = [ln for b in blocks for ln in b.splitlines() if ln.startswith("raypipe ")]
    assert not bare, bare
    for name, spec in REGISTRY.items():
        if spec.file != f"{name}.jsonl" and spec.hf_id:  # the organism's splits are written by make-task
            assert f"`{name}` → `{spec.file}`" in readme, (name, spec.file)
