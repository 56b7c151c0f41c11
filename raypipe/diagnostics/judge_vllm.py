"""The `vllm` step-judge backend: vLLM engines through `ray.data.llm`. Each trajectory becomes one row per request;
the answers are parsed and grouped back into one row per trajectory with the same code as the HTTP backend.
Needs vLLM on GPU nodes (the `gpu` extra), imported only when the job runs; not exercised by the CPU test suite."""
from __future__ import annotations

import json

from raypipe.diagnostics.judge import build_requests, parse_labels
from raypipe.diagnostics.judge_base import JUDGE_BACKENDS, OUT_SCHEMA, JudgeBackend, prepare, result_row

CARRY = ["id", "source", "problem_id", "error"]


@JUDGE_BACKENDS.register("vllm")
class VLLMJudge(JudgeBackend):
    """--model is a checkpoint path; --actors engine replicas; --batch-size the engine batch."""

    @classmethod
    def check(cls, config) -> None:
        if not config.model:
            raise ValueError("--backend vllm needs --model (a checkpoint path)")

    def label(self, ds, ex=None):
        return label_with_vllm(ds, self.config)


def to_requests(row: dict, cfg) -> list[dict]:
    """One row per chat request; a trajectory with no steps (or a load error) gives one row with count 0."""
    prep = prepare(row, cfg)
    base = {**{k: row[k] for k in CARRY}, "branch_ratio": prep["branch_ratio"], "n_steps_total": prep["n_steps_total"]}
    reqs = build_requests(row["problem"] or "", prep["steps"], cfg.steps_per_request, cfg.max_step_chars)
    if not reqs:
        return [{**base, "first": 0, "count": 0, "messages": ""}]
    return [{**base, "first": q["first"], "count": q["count"], "messages": json.dumps(q["messages"])} for q in reqs]


def assemble(rows: list[dict], cfg) -> dict:
    """One trajectory's answered request rows (fields of to_requests + answer, answer_error) -> its result row."""
    rows = sorted(rows, key=lambda r: r["first"])
    head = rows[0]
    parsed = []
    for r in rows:
        if r["count"] == 0:
            continue
        p = parse_labels(r.get("answer"), r["first"], r["count"])
        if r.get("answer_error"):
            p.detail = str(r["answer_error"])[:300]
        parsed.append(p)
    labels = [lab for p in parsed for lab in p.labels]
    prep = {"branch_ratio": head["branch_ratio"], "n_steps_total": head["n_steps_total"]}
    return result_row(head, prep, labels, cfg, parsed, [p.detail for p in parsed if p.status != "ok"])


def label_with_vllm(ds, cfg):
    import pyarrow as pa
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    requests = ds.flat_map(to_requests, fn_kwargs={"cfg": cfg})
    sampling = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    keep = CARRY + ["branch_ratio", "n_steps_total", "first", "count"]
    processor = build_processor(
        vLLMEngineProcessorConfig(model_source=cfg.model, batch_size=cfg.batch_size, concurrency=cfg.actors or 1,
                                  should_continue_on_error=True, engine_kwargs={"enable_prefix_caching": True}),
        preprocess=lambda r: {**r, "messages": json.loads(r["messages"]), "sampling_params": sampling},
        postprocess=lambda r: {**{k: r.get(k) for k in keep}, "answer": r.get("generated_text"),
                               "answer_error": r.get("__inference_error__")},
    )
    answered = processor(requests.filter(lambda r: r["count"] > 0))
    empty = requests.filter(lambda r: r["count"] == 0).map(
        lambda r: {**{k: r[k] for k in keep}, "answer": None, "answer_error": None})

    def group(batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        return pa.Table.from_pylist([assemble(rows, cfg)], schema=OUT_SCHEMA)

    merged = answered.union(empty)
    return merged.groupby("id").map_groups(group, batch_format="pyarrow")
