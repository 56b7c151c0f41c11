"""What every step-judge backend shares: the backend registry, the output row schema, and the per-trajectory
steps in (prepare) and result row out (result_row). Imports neither the settings nor any backend."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from raypipe.core.lexicon import get_lexicon
from raypipe.core.registry import Registry
from raypipe.core.structure import measure_python, split_steps
from raypipe.diagnostics.inputs import thinking_of
from raypipe.diagnostics.judge import PROMPT_VERSION, UNLABELLED, propose_share

if TYPE_CHECKING:
    from raypipe.diagnostics.config import JudgeConfig

OUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("problem_id", pa.string()), ("branch_ratio", pa.float64()),
    ("error", pa.string()), ("n_steps", pa.int64()), ("n_steps_total", pa.int64()), ("labels", pa.list_(pa.string())),
    ("n_requests", pa.int64()), ("n_failed_requests", pa.int64()), ("n_partial_requests", pa.int64()),
    ("n_unlabelled", pa.int64()), ("propose_share", pa.float64()), ("request_errors", pa.list_(pa.string())),
    ("judge", pa.string()), ("prompt_version", pa.string()),
])


class JudgeBackend:
    """Labels the steps of a Ray Dataset of trajectories (dataset.LOADED_SCHEMA) into OUT_SCHEMA rows.

    The class answers for the settings (check, judge_name, prompted); an instance, made on the driver with
    from_config, labels the dataset. Register a subclass with `@JUDGE_BACKENDS.register("name")`."""

    name: str
    prompted = True  # sends the LLM prompt PROMPT_VERSION (recorded with the labels)

    def __init__(self, config: "JudgeConfig"):
        self.config = config

    @classmethod
    def from_config(cls, config: "JudgeConfig") -> "JudgeBackend":
        return cls(config)

    @classmethod
    def check(cls, config: "JudgeConfig") -> None:
        """Raise ValueError when the settings lack what this backend needs."""

    @classmethod
    def judge_name(cls, config: "JudgeConfig") -> str:
        return f"{cls.name}:{config.model or config.endpoint}"

    in_process = False  # True: label() takes the in-process executor's datasets too (raypipe.executor)

    def label(self, ds, ex=None):
        """The labelled dataset (OUT_SCHEMA rows, one per input row), on the executor `ex` (default: Ray)."""
        raise NotImplementedError


JUDGE_BACKENDS: Registry[JudgeBackend] = Registry("judge backend")


def prepare(row: dict, cfg: "JudgeConfig") -> dict:
    """The judged steps of one trajectory and its branch_ratio (the curation job's, else the same measure)."""
    steps = split_steps(thinking_of(row), cfg.segmenter) if row["error"] is None else []
    ratio = row["branch_ratio"]
    if ratio is None and steps:
        ratio = measure_python(thinking_of(row), get_lexicon(cfg.lexicon), cfg.segmenter)["branch_ratio"]
    return {"steps": steps[: cfg.max_judged_steps] if cfg.max_judged_steps else steps, "n_steps_total": len(steps),
            "branch_ratio": ratio}


def result_row(row: dict, prep: dict, labels: list[str], cfg: "JudgeConfig", parsed: list | None = None,
               errors: list[str] | None = None) -> dict:
    parsed = parsed or []
    return {"id": row["id"], "source": row["source"], "problem_id": row["problem_id"],
            "branch_ratio": prep["branch_ratio"], "error": row["error"], "n_steps": len(labels),
            "n_steps_total": prep["n_steps_total"], "labels": labels, "n_requests": len(parsed),
            "n_failed_requests": sum(p.status == "failed" for p in parsed),
            "n_partial_requests": sum(p.status == "partial" for p in parsed),
            "n_unlabelled": sum(x == UNLABELLED for x in labels), "propose_share": propose_share(labels),
            "request_errors": (errors or [])[:5], "judge": cfg.judge_name(), "prompt_version": cfg.prompt_version()}


__all__ = ["JUDGE_BACKENDS", "JudgeBackend", "OUT_SCHEMA", "PROMPT_VERSION", "prepare", "result_row"]
