"""The step-judge job on Ray Data: number the steps, label them (keyword baseline or an LLM), aggregate, report."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from raypipe import io
from raypipe.diagnostics.inputs import thinking_of
from raypipe.diagnostics.judge import (PROMPT_VERSION, UNLABELLED, KeywordJudge, build_requests, parse_labels,
                                       propose_share)
from raypipe.lexicon import get_lexicon
from raypipe.structure import measure_python, split_steps

OUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("problem_id", pa.string()), ("branch_ratio", pa.float64()),
    ("error", pa.string()), ("n_steps", pa.int64()), ("n_steps_total", pa.int64()), ("labels", pa.list_(pa.string())),
    ("n_requests", pa.int64()), ("n_failed_requests", pa.int64()), ("n_partial_requests", pa.int64()),
    ("n_unlabelled", pa.int64()), ("propose_share", pa.float64()), ("request_errors", pa.list_(pa.string())),
    ("judge", pa.string()), ("prompt_version", pa.string()),
])


class JudgeConfig(BaseModel):
    input: str = Field(description="trajectories (any curate input) or a curation output folder")
    output: str
    backend: Literal["keyword", "openai", "vllm"] = "keyword"
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    model: str | None = Field(None, description="model name at the endpoint (default: its first), or vLLM model path")
    api_key_env: str = "OPENAI_API_KEY"
    lexicon: str = "paper"
    segmenter: str = "blank"
    steps_per_request: int = Field(30, gt=0)
    max_step_chars: int = Field(1200, gt=0)
    max_steps: int | None = Field(None, gt=0, description="judge at most the first N steps of a trajectory")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0)
    concurrency: int = Field(4, gt=0, description="requests in flight per actor")
    max_tokens: int = Field(2048, gt=0)
    temperature: float = 0.0
    json_mode: bool = False
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=0)
    actors: int | None = None
    num_cpus: int | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("--backend openai needs --endpoint (an OpenAI-compatible base URL)")
        if self.backend == "vllm" and not self.model:
            raise ValueError("--backend vllm needs --model (a checkpoint path)")
        get_lexicon(self.lexicon)
        return self

    def judge_name(self) -> str:
        if self.backend == "keyword":
            return KeywordJudge(self.lexicon).version
        return f"{self.backend}:{self.model or self.endpoint}"


def prepare(row: dict, cfg: JudgeConfig) -> dict:
    """The judged steps of one trajectory and its branch_ratio (the curation job's, else the same measure)."""
    steps = split_steps(thinking_of(row), cfg.segmenter) if row["error"] is None else []
    ratio = row["branch_ratio"]
    if ratio is None and steps:
        ratio = measure_python(thinking_of(row), get_lexicon(cfg.lexicon), cfg.segmenter)["branch_ratio"]
    return {"steps": steps[: cfg.max_steps] if cfg.max_steps else steps, "n_steps_total": len(steps),
            "branch_ratio": ratio}


def result_row(row: dict, prep: dict, labels: list[str], cfg: JudgeConfig, parsed: list | None = None,
               errors: list[str] | None = None) -> dict:
    parsed = parsed or []
    return {"id": row["id"], "source": row["source"], "problem_id": row["problem_id"],
            "branch_ratio": prep["branch_ratio"], "error": row["error"], "n_steps": len(labels),
            "n_steps_total": prep["n_steps_total"], "labels": labels, "n_requests": len(parsed),
            "n_failed_requests": sum(p.status == "failed" for p in parsed),
            "n_partial_requests": sum(p.status == "partial" for p in parsed),
            "n_unlabelled": sum(x == UNLABELLED for x in labels), "propose_share": propose_share(labels),
            "request_errors": (errors or [])[:5], "judge": cfg.judge_name(), "prompt_version": PROMPT_VERSION
            if cfg.backend != "keyword" else None}


class Labeler:
    """Ray Data actor: labels the steps of a batch of trajectories with the configured backend."""

    def __init__(self, config: dict):
        self.cfg = JudgeConfig(**config)
        self.keyword = KeywordJudge(self.cfg.lexicon) if self.cfg.backend == "keyword" else None
        self.client = None
        if self.cfg.backend == "openai":
            from raypipe.diagnostics.judge_client import ChatClient

            c = self.cfg
            self.client = ChatClient(c.endpoint, c.model, c.api_key_env, c.timeout_s, c.max_retries, c.max_tokens,
                                     c.temperature, c.json_mode)
            self.pool = ThreadPoolExecutor(max_workers=c.concurrency)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        preps = [prepare(r, self.cfg) for r in rows]
        if self.keyword:
            out = [result_row(r, p, self.keyword.label_steps(p["steps"]), self.cfg) for r, p in zip(rows, preps)]
        else:
            out = self._llm(rows, preps)
        return pa.Table.from_pylist(out, schema=OUT_SCHEMA)

    def _llm(self, rows: list[dict], preps: list[dict]) -> list[dict]:
        c = self.cfg
        reqs = [(i, q) for i, (r, p) in enumerate(zip(rows, preps))
                for q in build_requests(r["problem"] or "", p["steps"], c.steps_per_request, c.max_step_chars)]
        answers = list(self.pool.map(lambda iq: self.client.chat(iq[1]["messages"]), reqs))
        per_row: list[list] = [[] for _ in rows]
        for (i, q), (text, err) in zip(reqs, answers):
            parsed = parse_labels(text, q["first"], q["count"])
            if err:
                parsed.detail = err
            per_row[i].append(parsed)
        out = []
        for r, p, parsed in zip(rows, preps, per_row):
            labels = [lab for x in parsed for lab in x.labels]
            errors = [x.detail for x in parsed if x.status != "ok"]
            out.append(result_row(r, p, labels, c, parsed, errors))
        return out


def run_judge(config: JudgeConfig) -> dict:
    import ray

    from raypipe.diagnostics.dataset import actor_plan, read_trajectories
    from raypipe.diagnostics.judge_summary import SUMMARY_COLUMNS, source_summary
    from raypipe.diagnostics.report import write_judge_report
    from raypipe.ray_env import ensure_ray

    t0 = time.time()
    ensure_ray(config.num_cpus)
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    ds, uris = read_trajectories(config.input, storage, config.limit)
    if config.backend == "vllm":
        from raypipe.diagnostics.judge_vllm import label_with_vllm

        labelled = label_with_vllm(ds, config)
    else:
        plan = actor_plan(config.actors, 0)
        num_cpus = 0.25 if config.backend == "openai" else plan["num_cpus"]
        print(f"[raypipe] judge ({config.judge_name()}): {len(uris)} input files, {plan['size']} actors "
              f"-> {config.output}", flush=True)
        labelled = ds.map_batches(Labeler, fn_constructor_kwargs={"config": config.model_dump()},
                                  batch_size=config.batch_size, batch_format="pyarrow",
                                  compute=ray.data.ActorPoolStrategy(size=plan["size"]), num_cpus=num_cpus)
    traj_uri = io.join(config.output, "trajectories")
    io.remove_tree(traj_uri, storage)
    fs, path = storage.filesystem(traj_uri)
    labelled.write_parquet(path, filesystem=fs)
    table = io.read_parquet_dir(traj_uri, storage, columns=SUMMARY_COLUMNS)
    summary = {
        "judge": config.judge_name(),
        "prompt_version": PROMPT_VERSION if config.backend != "keyword" else None,
        "config": config.model_dump(),
        "inputs": uris,
        "rows": table.num_rows if table is not None else 0,
        "sources": source_summary(table) if table is not None else {},
        "seconds": round(time.time() - t0, 2),
    }
    io.write_text(json.dumps(summary, indent=1), io.join(config.output, "summary.json"), storage)
    write_judge_report(summary, io.join(config.output, "report.html"), storage)
    print(f"[raypipe] judge done in {summary['seconds']}s: {summary['rows']} trajectories; "
          f"report {io.join(config.output, 'report.html')}", flush=True)
    return summary
