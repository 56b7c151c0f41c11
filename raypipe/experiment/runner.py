"""The paper's study in one command: for each arm, curate -> SFT -> eval, then one results table.

Arms (on one problem set, sources A and B):
  A-all          source A, every verified-correct trajectory       (curate --rule keep-all)
  B-all          source B, every verified-correct trajectory       (curate --rule keep-all)
  A-drop-top     A without its 10 % most branching trajectories    (curate --rule top --drop-top 0.1)
  A-drop-random  A without a random 10 %                           (curate --rule random --drop-top 0.1)
  A-delete-steps A with 10 % of each trajectory's steps deleted    (optional; curate --delete-steps 0.1)
  base           the base model without SFT                        (optional; eval only)

Every stage is a subprocess of the `raypipe` CLI (so a submitted job's children join its cluster through
RAY_ADDRESS) and is skipped when its completion marker exists: curation's manifest.json, SFT's
train_summary.json, eval's results.json. A finished stage whose recorded command differs from the current one is
an error, never silently reused.
"""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import yaml
from pydantic import BaseModel, Field, field_validator

from raypipe import io

STAGES = ("curate", "train", "eval")
MARKERS = {"curate": "manifest.json", "train": "train_summary.json", "eval": "results.json"}
STAGE_DIRS = {"curate": "curate", "train": "sft", "eval": "eval"}
STANDARD_ARMS = ("A-all", "B-all", "A-drop-top", "A-drop-random")
OPTIONAL_ARMS = ("A-delete-steps", "base")


class ExperimentConfig(BaseModel):
    name: str = "branching-study"
    output: str = Field(description="experiment folder, local or s3://: arms/<arm>/{curate,sft,eval}/ and results.*")
    model: str = Field("tiny", description="base model: Hugging Face path, s3:// copy, or 'tiny'")
    benchmarks: list[str] = ["math500", "aime24", "aime25", "beyond_aime", "hmmt25"]
    source_a: str = Field(description="input of source A (file, folder, glob; local or s3://)")
    source_b: str = Field(description="input of source B, on the same problems")
    drop: float = Field(0.10, gt=0, lt=1, description="fraction dropped in the drop arms / steps deleted")
    seed: int = 0
    arms: list[str] = list(STANDARD_ARMS)
    curate: dict[str, Any] = Field(default_factory=dict, description="extra `raypipe curate` flags for every arm")
    train: dict[str, Any] = Field(default_factory=dict, description="`raypipe train` flags")
    eval: dict[str, Any] = Field(default_factory=dict, description="`raypipe eval` flags (n, limit, backend, ...)")
    s3_endpoint: str | None = None
    s3_region: str | None = None

    @field_validator("arms")
    @classmethod
    def _known(cls, arms: list[str]) -> list[str]:
        unknown = [a for a in arms if a not in STANDARD_ARMS + OPTIONAL_ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {', '.join(STANDARD_ARMS + OPTIONAL_ARMS)}")
        if len(set(arms)) != len(arms):
            raise ValueError("an arm is listed twice")
        return arms

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _split(cls, v):
        return [b.strip() for b in v.split(",") if b.strip()] if isinstance(v, str) else v

    def storage(self) -> io.Storage:
        return io.Storage(self.s3_endpoint, self.s3_region)


def load_experiment(path: str, overrides: dict | None = None) -> ExperimentConfig:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ExperimentConfig(**data)


def flags(options: dict[str, Any]) -> list[str]:
    """{"max_len": 256, "pack": True, "benchmarks": ["a", "b"]} -> ["--max-len", "256", "--pack", "--benchmarks", "a,b"]"""
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


class Stage(BaseModel):
    arm: str
    stage: str
    output: str
    argv: list[str]

    @property
    def marker(self) -> str:
        return io.join(self.output, MARKERS[self.stage])

    @property
    def record(self) -> str:
        return io.join(self.output, "_experiment_stage.json")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.argv).encode()).hexdigest()[:16]


def arm_curation(cfg: ExperimentConfig, arm: str) -> dict[str, Any]:
    source = cfg.source_b if arm.startswith("B-") else cfg.source_a
    rule = {"A-drop-top": {"rule": "top", "drop_top": cfg.drop},
            "A-drop-random": {"rule": "random", "drop_top": cfg.drop, "seed": cfg.seed},
            "A-delete-steps": {"rule": "keep-all", "delete_steps": cfg.drop, "seed": cfg.seed}}.get(arm, {"rule": "keep-all"})
    return {"input": source, **cfg.curate, **rule}


def plan(cfg: ExperimentConfig) -> list[Stage]:
    """Every stage of every arm, in order, with its full command line."""
    s3 = {"s3_endpoint": cfg.s3_endpoint, "s3_region": cfg.s3_region}
    stages = []
    for arm in cfg.arms:
        root = io.join(cfg.output, "arms", arm)
        out = {st: io.join(root, STAGE_DIRS[st]) for st in STAGES}
        model = cfg.model
        if arm != "base":
            stages.append(Stage(arm=arm, stage="curate", output=out["curate"], argv=["curate", *flags(
                {**arm_curation(cfg, arm), "output": out["curate"], **s3})]))
            stages.append(Stage(arm=arm, stage="train", output=out["train"], argv=["train", *flags(
                {"seed": cfg.seed, **cfg.train, "data": out["curate"], "model": cfg.model, "output": out["train"],
                 **s3})]))
            model = io.join(out["train"], "model")
        stages.append(Stage(arm=arm, stage="eval", output=out["eval"], argv=["eval", *flags(
            {"seed": cfg.seed, **cfg.eval, "model": model, "benchmarks": cfg.benchmarks, "output": out["eval"],
             **s3})]))
    return stages


class StageMismatch(RuntimeError):
    pass


class StageFailed(RuntimeError):
    pass


def _say(msg: str) -> None:
    print(f"[experiment] {msg}", flush=True)


def stage_done(stage: Stage, storage: io.Storage) -> bool:
    """True when the stage finished with this command; StageMismatch when it finished with another."""
    if not io.exists(stage.marker, storage):
        return False
    record = io.read_text(stage.record, storage)
    if record is not None and json.loads(record).get("digest") != stage.digest():
        raise StageMismatch(f"arm {stage.arm}: {stage.stage} in {stage.output} finished with other settings "
                            f"({json.loads(record).get('argv')}); use another output or remove that folder")
    return True


def run_stage(stage: Stage, storage: io.Storage) -> None:
    cmd = [sys.executable, "-m", "raypipe.cli", *stage.argv]
    _say(f"arm {stage.arm}: {stage.stage} -> {stage.output}\n  $ raypipe {' '.join(stage.argv)}")
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
        raise StageFailed(f"arm {stage.arm}: {stage.stage} failed with exit status {rc}: raypipe {' '.join(stage.argv)}")
    if not io.exists(stage.marker, storage):
        raise StageFailed(f"arm {stage.arm}: {stage.stage} exited 0 but wrote no {stage.marker}")
    io.write_text(json.dumps({"argv": stage.argv, "digest": stage.digest(), "finished": time.time()}),
                  stage.record, storage)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_experiment(cfg: ExperimentConfig, runner: Callable[[Stage, io.Storage], None] = run_stage) -> dict:
    storage = cfg.storage()
    stages = plan(cfg)
    log_uri = io.join(cfg.output, "experiment_log.jsonl")
    events = []
    _say(f"{cfg.name}: {len(cfg.arms)} arms x curate/train/eval -> {cfg.output}")
    io.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False), io.join(cfg.output, "experiment.yaml"), storage)
    for stage in stages:
        t0 = time.time()
        if stage_done(stage, storage):
            action = "skipped"
            _say(f"arm {stage.arm}: {stage.stage} already finished ({stage.marker}), skipped")
        else:
            runner(stage, storage)
            action = "ran"
        events.append({"arm": stage.arm, "stage": stage.stage, "action": action, "seconds": round(time.time() - t0, 2),
                       "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        previous = io.read_text(log_uri, storage) or ""
        io.write_text(previous + json.dumps(events[-1]) + "\n", log_uri, storage)
    from raypipe.experiment.table import write_results

    table = write_results(cfg, storage)
    _say(f"results: {io.join(cfg.output, 'results.html')}")
    return {"events": events, "table": table}
