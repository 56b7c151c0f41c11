"""The paper's study in one command: pair the sources, curate every arm, match the training budgets, then SFT and
eval per arm, and one results table.

Arms (on the paired problems of sources A and B; `raypipe experiment plan` prices them first):
  A-all                  A, every verified-correct trajectory                (curate rule keep-all)
  A-drop-top-keyword     A without its 10 % most branching by keyword share  (rule top, proxy keyword-share)
  A-drop-top-step-ratio  A without its 10 % with most steps relative to B    (rule top, proxy step-ratio, B's
                         paired input as the reference input: scored, never written)
  A-drop-random          A without a random 10 %                             (rule random)
  A-drop-longest         A without its 10 % longest (the length filter)      (rule longest)
  B-all                  B, every verified-correct trajectory                (rule keep-all)
  A-delete-steps         A with 10 % of each trajectory's steps deleted      (delete_steps 0.1)
  B-delete-steps         the same ablation on B
  base                   the student without SFT                             (optional; eval only)
With a `judge:` section, `raypipe judge` labels the steps of each source's paired traces (judge/A, judge/B), and
the table reports the two teachers' Propose shares beside the arms.

Every stage is a subprocess of the `raypipe` CLI (so a submitted job's children join its cluster through
RAY_ADDRESS), given its whole settings as a YAML file, and is skipped when its completion marker exists:
pairing.json, curation's manifest.json, the judge's summary.json, SFT's train_summary.json, eval's results.json. A finished stage recorded
with other settings is an error, never silently reused. The budget (budget.json) is set between curation and SFT,
from every arm's curated rows tokenized as SFT renders them (raypipe.experiment.budget).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict

from raypipe.core import io, settings
from raypipe.core.errors import ConfigMismatch
from raypipe.core.settings import Settings, config_hash
from raypipe.experiment.config import STAGE_MODELS, ExperimentConfig
from raypipe.experiment.config import READ_FIELDS, PairConfig

STAGES = ("curate", "train", "eval")
MARKERS = {"make-task": "task.json", "pair": "pairing.json", "curate": "manifest.json", "train": "train_summary.json", "eval": "results.json",
           "judge": "summary.json"}
PAIRED = "paired"


class StageFailed(RuntimeError):
    pass


class Stage(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    arm: str
    stage: str
    output: str
    seed: int | None = None  # the training and evaluation seed, with the experiment's `seeds`
    settings: Settings  # the command's whole settings model, validated before anything runs

    @property
    def marker(self) -> str:
        return io.join(self.output, MARKERS[self.stage])

    @property
    def record(self) -> str:
        return io.join(self.output, "_experiment_stage.json")

    def view(self) -> dict:
        return settings_view(self.settings)

    def digest(self) -> str:
        return config_hash(self.view())


def settings_view(model: Settings) -> dict:
    """What identifies a stage's work: every setting but the plugin list."""
    return model.model_dump(mode="json", exclude={"plugins"})


def arm_input(cfg: ExperimentConfig, source: str) -> str:
    """What an arm of source A or B curates: its paired input, or the whole source without pairing."""
    if cfg.pair_by == "none":
        return cfg.source_a if source == "A" else cfg.source_b
    return io.join(cfg.output, PAIRED, "inputs", source)


def arm_curation(cfg: ExperimentConfig, arm: str) -> dict[str, Any]:
    """The settings an arm's curation stage fixes (they win over the experiment's curate section)."""
    top = {"rule": "top", "drop_top": cfg.drop, "proxy": "keyword-share"}
    delete = {"rule": "keep-all", "delete_steps": cfg.drop, "seed": cfg.seed}
    return {"A-drop-top-keyword": top, "A-drop-top": top,
            "A-drop-top-step-ratio": {**top, "proxy": "step-ratio", "reference_input": arm_input(cfg, "B")},
            "A-drop-random": {"rule": "random", "drop_top": cfg.drop, "seed": cfg.seed},
            "A-drop-longest": {"rule": "longest", "drop_top": cfg.drop},
            "A-delete-steps": delete, "B-delete-steps": delete}.get(arm, {"rule": "keep-all"})


def task_stage(cfg: ExperimentConfig) -> Stage | None:
    """With a `task:` section, `raypipe make-task` runs first: the sources, benchmarks and student it writes."""
    if cfg.task is None:
        return None
    return Stage(arm="task", stage="make-task", output=cfg.task.output, settings=cfg.task)


def pair_stage(cfg: ExperimentConfig) -> Stage | None:
    if cfg.pair_by == "none":
        return None
    section = cfg.curate.model_dump(exclude_unset=True)
    values = {n: section[n] for n in READ_FIELDS if n in section}
    out = io.join(cfg.output, PAIRED)
    settings_ = PairConfig.model_validate({**values, "plugins": section.get("plugins", []),
                                           "inputs": [cfg.source_a, cfg.source_b], "names": ["A", "B"],
                                           "key": cfg.pair_by, "output": out, "s3_endpoint": cfg.s3_endpoint,
                                           "s3_region": cfg.s3_region})
    return Stage(arm=PAIRED, stage="pair", output=out, settings=settings_)


def judge_stages(cfg: ExperimentConfig) -> list[Stage]:
    """With a `judge:` section, the step judge of each source's input (paired when the experiment pairs)."""
    if cfg.judge is None:
        return []
    section = cfg.judge.model_dump(exclude_unset=True)
    out = []
    for source in ("A", "B"):
        folder = io.join(cfg.output, "judge", source)
        values = {**section, "input": arm_input(cfg, source), "output": folder, "s3_endpoint": cfg.s3_endpoint,
                  "s3_region": cfg.s3_region}
        out.append(Stage(arm=f"judge-{source}", stage="judge", output=folder,
                         settings=STAGE_MODELS["judge"].model_validate(values)))
    return out


def stages(cfg: ExperimentConfig, budget: dict | None = None) -> list[Stage]:
    """Every stage in the order it runs: pairing, every arm's curation, the step judge of each source (with a
    `judge:` section), then SFT and eval arm by arm. SFT's data, steps and epochs come from the budget
    (budget.json, or `budget` when given) once it exists."""
    from raypipe.experiment.budget import read_budget

    s3 = {"s3_endpoint": cfg.s3_endpoint, "s3_region": cfg.s3_region}
    sections = {name: getattr(cfg, name).model_dump(exclude_unset=True) for name in STAGES}
    prompt = cfg.prompt_version()
    if prompt:
        for name in ("train", "eval"):
            sections[name]["prompt_version"] = prompt
    budget = read_budget(cfg) if budget is None else budget
    if (budget or {}).get("mode") != cfg.budget:  # a budget.json of other settings sets nothing
        budget = {}
    first, later = [s for s in [task_stage(cfg), pair_stage(cfg)] if s], []
    grading = cfg.grading()
    for arm in cfg.arms:
        matched = ((budget or {}).get("arms") or {}).get(arm) or {}
        curated = cfg.stage_dir(arm, "curate")
        if arm != "base":
            values = {"seed": cfg.seed, **sections["curate"], **arm_curation(cfg, arm),
                      "input": arm_input(cfg, "B" if arm.startswith("B-") else "A"), "output": curated, **s3}
            first.append(Stage(arm=arm, stage="curate", output=curated,
                               settings=STAGE_MODELS["curate"].model_validate(values)))
        for seed in cfg.seed_list():
            model = cfg.model
            per_seed = {"seed": seed} if cfg.seeds is not None else {}
            if arm != "base":
                out = cfg.stage_dir(arm, "train", seed)
                values = {"seed": cfg.seed, **sections["train"], **per_seed, "data": curated, "model": cfg.model,
                          "output": out, **s3, **matched.get("train", {})}
                later.append(Stage(arm=arm, stage="train", output=out, seed=seed,
                                   settings=STAGE_MODELS["train"].model_validate(values)))
                model = io.join(out, "model")
            out = cfg.stage_dir(arm, "eval", seed)
            values = {"seed": cfg.seed, **grading, **sections["eval"], **per_seed, "model": model,
                      "benchmarks": cfg.benchmarks, "output": out, **s3}
            later.append(Stage(arm=arm, stage="eval", output=out, seed=seed,
                               settings=STAGE_MODELS["eval"].model_validate(values)))
    return first + judge_stages(cfg) + later


def _say(msg: str) -> None:
    print(f"[experiment] {msg}", flush=True)


def recorded_view(stage: Stage, record: dict) -> dict | None:
    """The settings a finished stage recorded; a record from before typed stages holds its command line."""
    if "settings" in record:
        return record["settings"]
    if "argv" in record:  # parse it with today's flags of that command: what it meant, not how it was spelled
        import argparse

        parser = argparse.ArgumentParser(exit_on_error=False)
        settings.add_arguments(parser, type(stage.settings))
        try:
            return settings_view(settings.from_args(parser.parse_args(record["argv"][1:])))
        except (SystemExit, ValueError, argparse.ArgumentError):
            return None
    return None


def stage_done(stage: Stage, storage: io.Storage) -> bool:
    """True when the stage finished with these settings; ConfigMismatch when it finished with others."""
    if not io.exists(stage.marker, storage):
        return False
    text = io.read_text(stage.record, storage)
    if text is None:
        return True  # a finished stage with no record is trusted
    recorded = recorded_view(stage, json.loads(text))
    changed = differing(stage, recorded)
    if changed:
        raise ConfigMismatch(f"arm {stage.arm}: {stage.stage} in {stage.output} finished with other settings "
                            f"(differing: {', '.join(changed)}); use another output or remove "
                            "that folder")
    return True


def differing(stage: Stage, recorded: dict | None) -> list[str]:
    """The settings in which a finished stage's record differs from the stage now. A setting added to a command
    since the record was written counts only when it is not at its default (so earlier experiments resume)."""
    if recorded is None:
        return ["unreadable record"]
    view = stage.view()
    defaults = json.loads(json.dumps(type(stage.settings)._defaults(), default=str))
    missing = object()
    return sorted(k for k in view if recorded.get(k, defaults.get(k, missing)) != view[k])


def run_stage(stage: Stage, storage: io.Storage) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{stage.arm}-{stage.stage}-", delete=False) as f:
        f.write(settings.to_yaml(stage.settings))
    positional = list(stage.settings.inputs) if stage.stage == "pair" else []
    cmd = [sys.executable, "-m", "raypipe.cli", stage.stage, *positional, "--config", f.name]
    _say(f"arm {stage.arm}: {stage.stage} -> {stage.output}\n  $ raypipe {stage.stage} --config {f.name}")
    child = subprocess.Popen(cmd)
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):  # a stopped job stops its running stage too
        child.terminate()
        raise SystemExit(128 + signum)

    if threading_main():
        signal.signal(signal.SIGTERM, forward)
    try:
        rc = child.wait()
    finally:
        if threading_main():
            signal.signal(signal.SIGTERM, previous)
    if rc != 0:
        raise StageFailed(f"arm {stage.arm}: {stage.stage} failed with exit status {rc}: raypipe {stage.stage} "
                          f"--config {f.name}")
    if not io.exists(stage.marker, storage):
        raise StageFailed(f"arm {stage.arm}: {stage.stage} exited 0 but wrote no {stage.marker}")
    io.write_text(json.dumps({"command": stage.stage, "settings": stage.view(), "digest": stage.digest(),
                              "finished": time.time()}), stage.record, storage)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def describe(cfg: ExperimentConfig) -> str:
    """Every stage with its state and its effective settings, false values included (`--dry-run`)."""
    storage, lines = cfg.storage(), []
    for stage in stages(cfg):
        try:
            state = "done" if stage_done(stage, storage) else "to run"
        except OSError:
            state = "unknown (storage not reachable)"
        arm = stage.arm if stage.seed is None else f"{stage.arm} seed {stage.seed}"
        lines.append(f"{arm:22s} {stage.stage:7s} {state:7s} raypipe {stage.stage} -> {stage.output}")
        lines += ["    " + line for line in settings.to_yaml(stage.settings).splitlines()]
    return "\n".join(lines)


def run_experiment(cfg: ExperimentConfig, runner: Callable[[Stage, io.Storage], None] = run_stage) -> dict:
    from raypipe.experiment.budget import ensure_budget
    from raypipe.experiment.table import write_results

    storage = cfg.storage()
    log_uri = io.join(cfg.output, "experiment_log.jsonl")
    events: list[dict] = []
    _say(f"{cfg.name}: {len(cfg.arms)} arms x curate/train/eval -> {cfg.output}")
    io.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), io.join(cfg.output, "experiment.yaml"),
                  storage)

    def run_all(todo: list[Stage]) -> None:
        for stage in todo:
            t0 = time.time()
            if stage_done(stage, storage):
                action = "skipped"
                _say(f"arm {stage.arm}: {stage.stage} already finished ({stage.marker}), skipped")
            else:
                runner(stage, storage)
                action = "ran"
            events.append({"arm": stage.arm, "stage": stage.stage, "action": action,
                           "seconds": round(time.time() - t0, 2), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            previous = io.read_text(log_uri, storage) or ""
            io.write_text(previous + json.dumps(events[-1]) + "\n", log_uri, storage)

    run_all([s for s in stages(cfg, {}) if s.stage in ("make-task", "pair", "curate", "judge")])
    first_seed = {}
    for s in stages(cfg, {}):  # every seed trains on the same data: the budget is set from the first seed's stage
        if s.stage == "train":
            first_seed.setdefault(s.arm, s)
    budget = ensure_budget(cfg, first_seed, storage)
    run_all([s for s in stages(cfg, budget) if s.stage in ("train", "eval")])
    from raypipe.experiment.plan import estimate

    table = write_results(cfg, storage, estimate(cfg, stages, sample=False))
    _say(f"results: {io.join(cfg.output, 'results.html')}")
    return {"events": events, "table": table, "budget": budget}
