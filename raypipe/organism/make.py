"""`raypipe make-task`: the organism's files, written deterministically from a seed.

    <output>/teachers/divergent.jsonl   R1 style: response = <think>…</think> + final (source A of the study)
    <output>/teachers/convergent.jsonl  gpt-oss harmony: analysis channel + final channel (source B)
    <output>/benchmarks/<name>.jsonl     the in-distribution test split and the harder split (id, problem, answer)
    <output>/student/                    the student, initialised from scratch, in Hugging Face format
    <output>/task.json                   the settings, the counts and each teacher's measured rates
Both teachers solve the same training problems, with the same ids (paired sources, as in the paper).
"""
from __future__ import annotations

import json
import os
from collections import Counter

from raypipe.core.prompts import PROMPTS
from raypipe.organism.config import MakeTaskConfig
from raypipe.organism.task import Problem, Trace, problems, rng_for, solve

TEACHERS = {"divergent": "r1", "convergent": "harmony"}  # teacher -> the markup it writes
BENCHMARK_FILES = {"organism": "organism.jsonl", "organism_hard": "organism_hard.jsonl"}


def render(trace: Trace, markup: str) -> str:
    """The teacher's raw response in its own markup; a cut-off trace has no closing tag and no final part."""
    thinking = "\n\n".join(trace.steps)
    if markup == "r1":
        return f"<think>\n{thinking}" + ("" if trace.final is None else f"\n</think>\n\n{trace.final}")
    head = f"<|channel|>analysis<|message|>{thinking}"
    if trace.final is None:
        return head
    return head + f"<|end|><|start|>assistant<|channel|>final<|message|>{trace.final}<|return|>"


def teacher_rows(cfg: MakeTaskConfig, teacher: str, train: list[Problem]) -> tuple[list[dict], dict]:
    style = getattr(cfg, teacher)
    rows, counts = [], Counter()
    for p in train:
        trace = solve(p, style, rng_for(cfg.seed, "teacher", teacher, p.id), cfg.max_number())
        rows.append({"id": p.id, "source": f"{teacher}-teacher", "problem": p.text, "answer": str(p.answer),
                     "response": render(trace, TEACHERS[teacher]), "n_branches": trace.n_branches})
        counts["traces"] += 1
        counts["cut_off"] += trace.final is None
        counts["wrong"] += trace.final is not None and trace.answer != p.answer
        counts["branches"] += trace.n_branches
        counts["with_branches"] += trace.n_branches > 0
    stats = {**counts, "correct_rate": (counts["traces"] - counts["cut_off"] - counts["wrong"]) / max(1, len(rows)),
             "mean_branches": counts["branches"] / max(1, len(rows))}
    return rows, stats


def estimate_sources(cfg: MakeTaskConfig, sample: int = 200) -> dict[str, dict]:
    """Each teacher's records and tokens per record (UTF-8 bytes / 4), from a sample of the traces the task stage
    will write: what `raypipe experiment plan` counts before the files exist."""
    from raypipe.core.structure import BYTES_PER_TOKEN

    train = problems(cfg.seed, "train", min(sample, cfg.train_problems), cfg.difficulty)
    out = {}
    for source, teacher in (("A", "divergent"), ("B", "convergent")):
        rows, _ = teacher_rows(cfg, teacher, train)
        nbytes = sum(len(json.dumps(r).encode()) for r in rows) / len(rows)
        out[source] = {"records": cfg.train_problems, "tokens_per_record": nbytes / BYTES_PER_TOKEN,
                       "basis": f"task: {cfg.train_problems} problems, a sample of {len(rows)} traces"}
    return out


def write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def make_task(cfg: MakeTaskConfig) -> dict:
    from raypipe.organism.student import build_student, parameter_count

    train = problems(cfg.seed, "train", cfg.train_problems, cfg.difficulty)
    seen = {p.text for p in train}
    test = problems(cfg.seed, "test", cfg.test_problems, cfg.difficulty, seen)
    hard = problems(cfg.seed, "hard", cfg.hard_problems, cfg.hard, seen | {p.text for p in test})
    out = cfg.output
    teachers = {}
    corpus: list[str] = []
    for teacher in TEACHERS:
        rows, stats = teacher_rows(cfg, teacher, train)
        write_jsonl(os.path.join(out, "teachers", f"{teacher}.jsonl"), rows)
        teachers[teacher] = {"file": f"teachers/{teacher}.jsonl", "markup": TEACHERS[teacher], **stats}
        corpus += [r["response"] for r in rows[:2000]]
    for name, split in (("organism", test), ("organism_hard", hard)):
        write_jsonl(os.path.join(out, "benchmarks", BENCHMARK_FILES[name]),
                    [{"id": p.id, "problem": p.text, "answer": str(p.answer), "n_ops": len(p.ops)} for p in split])
    # The tokenizer is fit to what the student reads and writes: problems, prompts, both teachers' traces.
    corpus += [p.text for p in train[:2000]] + [t.text.replace("{problem}", "") for t in PROMPTS.values()] * 50
    student = build_student(os.path.join(out, "student"), corpus, cfg.student, cfg.seed, cfg.max_number())
    summary = {"task": "arithmetic chains", "config": cfg.model_dump(mode="json", exclude={"output"}), "problems": {
        "train": len(train), "organism": len(test), "organism_hard": len(hard)},
        "teachers": teachers, "student": {"path": "student", "parameters": parameter_count(student)}}
    with open(os.path.join(out, "task.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    return summary
