"""The generation's units (no Ray here): the problems, a unit per (problem, sample index) with its own seed and
completion marker, and the quota rounds that decide which problems get more samples.

A unit's marker, `generation/units/<key>.json`, is the unit's whole record: its trace (or the reason it has none),
tokens, verdict and decision. A rerun lists the markers once and skips every finished unit; a unit recorded with a
teacher error is sampled again, with the same seed.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from raypipe.core import io
from raypipe.core.schema import stable_hash
from raypipe.eval import benchmarks
from raypipe.eval.benchmarks import Benchmark, Problem

# A problems file: the usual field names of problem, answer and id.
PROBLEMS = Benchmark("problems", "problems", "", "", None, "", problem_fields=("problem", "question", "prompt"),
                     answer_fields=("answer", "reference_answer", "expected_answer", "ground_truth"),
                     id_fields=("id", "problem_id", "unique_id", "uuid"))


def load_problems(cfg) -> list[Problem]:
    """A registered benchmark's problems, or those of a JSONL / Parquet file, folder or glob."""
    storage = cfg.storage()
    if cfg.input in benchmarks.REGISTRY:
        problems = benchmarks.load(cfg.input, cfg.data_dir, storage=storage, check_size=False).problems
    else:
        rows = [r.value for uri in io.list_inputs(cfg.input, storage) for r in io.iter_raw_rows(uri, storage)]
        problems = benchmarks.rows_to_problems(PROBLEMS, rows, cfg.input)
    return problems[: cfg.limit] if cfg.limit else problems


@dataclass(frozen=True)
class Unit:
    problem: Problem
    sample: int

    @property
    def key(self) -> str:
        return f"{stable_hash(self.problem.id, n=8)}-{self.sample:04d}"

    @property
    def trace_id(self) -> str:
        return f"{self.problem.id}#{self.sample}"


def marker_uri(cfg, key: str) -> str:
    return cfg.generation_uri("units", f"{key}.json")


def read_markers(cfg, keys: list[str] | None = None) -> dict[str, dict]:
    """Finished units by key (one listing; every marker read when `keys` is None)."""
    storage = cfg.storage()
    names = set(io.list_names(cfg.generation_uri("units"), storage))
    wanted = [k for k in (keys if keys is not None else [n[:-5] for n in names]) if f"{k}.json" in names]
    out = {}
    for key in wanted:
        text = io.read_text(marker_uri(cfg, key), storage)
        if text:
            out[key] = json.loads(text)
    return out


def passes(record: dict) -> bool:
    """A unit that counts for its problem's quota: a finished, verified-correct trace the filter keeps."""
    return record.get("status") == "finished" and record.get("verdict") == "correct" and \
        record.get("decision") == "keep"


def next_round(problems: list[Problem], done: dict[str, dict], cfg) -> list[Unit]:
    """The units still to sample: the first `n` of every problem, then, with a quota, as many more of a problem as
    it lacks kept traces (at most `max_samples` in all). A unit with a teacher error is sampled again."""
    by_problem: dict[str, list[dict]] = {}
    for record in done.values():
        by_problem.setdefault(record["problem_id"], []).append(record)
    todo = []
    for p in problems:
        records = {r["sample"]: r for r in by_problem.get(p.id, [])}
        retry = [k for k, r in records.items() if r.get("status") == "error"]
        have = [k for k, r in records.items() if r.get("status") != "error"]
        want = cfg.n
        if cfg.keep_per_problem:
            kept = sum(passes(records[k]) for k in have)
            want = min(cfg.max_samples, max(cfg.n, len(have) + cfg.keep_per_problem - kept)) if have else \
                max(cfg.n, 1)
        fresh = [k for k in range(want) if k not in records]
        todo += [Unit(p, k) for k in sorted(retry + fresh)]
    return todo


def quota_report(problems: list[Problem], done: dict[str, dict], cfg) -> dict:
    """Per problem, samples and kept traces; the problems that never reached the quota."""
    samples, kept = Counter(), Counter()
    for r in done.values():
        samples[r["problem_id"]] += r.get("status") != "error"
        kept[r["problem_id"]] += passes(r)
    if not cfg.keep_per_problem:
        return {"quota": None, "problems": len(problems)}
    short = [p.id for p in problems if kept[p.id] < cfg.keep_per_problem]
    return {"quota": cfg.keep_per_problem, "max_samples": cfg.max_samples, "problems": len(problems),
            "fulfilled": len(problems) - len(short), "short": short[:1000], "short_count": len(short),
            "samples_per_problem": {"mean": sum(samples.values()) / max(1, len(problems)),
                                    "max": max(samples.values(), default=0)}}
