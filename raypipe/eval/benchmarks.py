"""The benchmark registry: names, Hugging Face ids, field mappings, sizes; loading from a data folder or a file.

Offline, a benchmark is read from `<data_dir>/<file>` (data_dir = --data-dir or RAYPIPE_DATA_DIR), or from an
explicit local / s3:// file. With network and the `datasets` package, it can be read from its hub id instead.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, field_validator

from raypipe.core import io as rio
from raypipe.core.registry import Registry
from raypipe.core.settings import SettingsGroup

DATA_DIR_ENV = "RAYPIPE_DATA_DIR"


class BenchmarkError(ValueError):
    """An unknown benchmark, a missing file, or a file whose rows do not fit the benchmark."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    hf_id: str
    split: str
    size: int | None  # None: generated (raypipe make-task), any size
    file: str  # the file name looked for in the data folder
    problem_fields: tuple[str, ...] = ("problem",)
    answer_fields: tuple[str, ...] = ("answer",)
    id_fields: tuple[str, ...] = ("id", "unique_id")
    aliases: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: Registry[Benchmark] = Registry.of("benchmark", [
    Benchmark("math500", "MATH500", "HuggingFaceH4/MATH-500", "test", 500, "math500.jsonl",
              id_fields=("unique_id", "id")),
    Benchmark("aime24", "AIME24", "HuggingFaceH4/aime_2024", "train", 30, "aime24.jsonl"),
    Benchmark("aime25", "AIME25", "MathArena/aime_2025", "train", 30, "aime25.jsonl",
              id_fields=("id", "problem_idx")),
    Benchmark("beyond_aime", "BeyondAIME", "ByteDance-Seed/BeyondAIME", "test", 100, "beyond_aime.jsonl"),
    Benchmark("hmmt25", "HMMT25", "MathArena/hmmt_feb_2025", "train", 30, "hmmt_feb_2025.jsonl",
              id_fields=("id", "problem_idx")),
    Benchmark("amc23", "AMC23", "math-ai/amc23", "test", 40, "amc23.jsonl", problem_fields=("problem", "question")),
    Benchmark("olympiadbench", "OlympiadBench", "Hothan/OlympiadBench", "test", 675, "olympiadbench.jsonl",
              problem_fields=("problem", "question"), answer_fields=("answer", "final_answer")),
    Benchmark("minerva", "Minerva", "math-ai/minervamath", "test", 272, "minerva_math.jsonl",
              problem_fields=("problem", "question")),
    Benchmark("olymmath_hard", "OlymMATH-EN-HARD", "RUC-AIBOX/OlymMATH", "en_hard", 100, "olymmath_en-hard.jsonl"),
    Benchmark("olymmath_easy", "OlymMATH-EN-EASY", "RUC-AIBOX/OlymMATH", "en_easy", 100, "olymmath_en-easy.jsonl"),
    # The model organism's splits, written by `raypipe make-task` into <task>/benchmarks/ (no hub copy).
    Benchmark("organism", "Organism", "", "test", None, "organism.jsonl"),
    Benchmark("organism_hard", "Organism (harder)", "", "hard", None, "organism_hard.jsonl"),
])
# The paper's five (its tables' average is over these).
PAPER_BENCHMARKS = ("math500", "aime24", "aime25", "beyond_aime", "hmmt25")


@dataclass
class Problem:
    id: str
    problem: str
    answer: str


@dataclass
class LoadedBenchmark:
    spec: Benchmark
    problems: list[Problem]
    source: str  # the file or hub id it came from
    sha256: str  # of the file's bytes (or of the canonical JSON of the hub rows)


def get(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise BenchmarkError(f"unknown benchmark '{name}'; known: {', '.join(REGISTRY.names())}")
    return REGISTRY.get(name)


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BenchmarkError("no benchmark named")
    for n in names:
        get(n)
    return list(dict.fromkeys(names))


def _pick(row: dict, keys: tuple[str, ...]):
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def rows_to_problems(spec: Benchmark, rows: list, where: str) -> list[Problem]:
    out, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BenchmarkError(f"{where}: row {i} is not an object")
        problem, answer = _pick(row, spec.problem_fields), _pick(row, spec.answer_fields)
        if not isinstance(problem, str) or answer is None or isinstance(answer, (dict, list)):
            raise BenchmarkError(
                f"{where}: row {i} lacks the fields of {spec.name}: needs a text field "
                f"{'|'.join(spec.problem_fields)} and a scalar {'|'.join(spec.answer_fields)}; found {sorted(row)}")
        pid = _pick(row, spec.id_fields)
        pid = str(pid) if pid is not None else f"{spec.name}_{i}"
        if pid in seen:
            pid = f"{pid}#{i}"
        seen.add(pid)
        out.append(Problem(pid, problem, str(answer)))
    return out


def _parse_jsonl(data: bytes, where: str) -> list:
    rows = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{where}: line {n} is not JSON ({e.msg})") from None
    return rows


def _read_file(uri: str, storage: rio.Storage) -> tuple[list, str]:
    if uri.endswith(".parquet"):
        table = rio.read_parquet(uri, storage)
        rows = table.to_pylist()
        return rows, hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    data = rio.read_bytes(uri, storage)
    if uri.endswith(".json"):
        try:
            rows = json.loads(data)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{uri}: not JSON ({e.msg})") from None
    else:
        rows = _parse_jsonl(data, uri)
    return rows, hashlib.sha256(data).hexdigest()


def _from_hub(spec: Benchmark) -> tuple[list, str]:
    try:
        import datasets
    except ImportError:
        raise BenchmarkError("the `datasets` package is not installed") from None
    rows = [dict(r) for r in datasets.load_dataset(spec.hf_id, split=spec.split)]
    return rows, hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def data_dir(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get(DATA_DIR_ENV) or None


def load(name: str, data_dir_: str | None = None, file: str | None = None, storage: rio.Storage | None = None,
         hub: bool = False, check_size: bool = True, limit: int | None = None) -> LoadedBenchmark:
    """Load one benchmark: an explicit file, else `<data_dir>/<spec.file>`, else (hub=True) its hub id."""
    spec = get(name)
    storage = storage or rio.Storage()
    root = data_dir(data_dir_)
    uri = file or (rio.join(root, spec.file) if root else None)
    if uri and (file or rio.exists(uri, storage)):
        if not rio.exists(uri, storage):
            raise BenchmarkError(f"{name}: file not found: {uri}")
        rows, digest = _read_file(uri, storage)
        where = uri
    elif hub and spec.hf_id:
        rows, digest = _from_hub(spec)
        where = f"hf:{spec.hf_id}[{spec.split}]"
    else:
        looked = f" (looked for {uri})" if uri else f" (no data folder: pass --data-dir or set {DATA_DIR_ENV})"
        raise BenchmarkError(
            f"{name}: no local file{looked}. Put the {spec.title} problems as JSONL with fields "
            f"{'|'.join(spec.problem_fields)} and {'|'.join(spec.answer_fields)} at <data-dir>/{spec.file}, "
            f"or pass --benchmark-file {name}=PATH (local or s3://), or "
            + (f"use --hub with network access to load {spec.hf_id}." if spec.hf_id else
               "write it with `raypipe make-task --output DIR` (then --data-dir DIR/benchmarks)."))
    problems = rows_to_problems(spec, rows, where)
    if check_size and spec.size is not None and len(problems) != spec.size:
        raise BenchmarkError(f"{name}: {where} holds {len(problems)} problems, but {spec.title} has {spec.size} "
                             "(pass --no-size-check to evaluate a different version)")
    if limit is not None:
        problems = problems[:limit]
    return LoadedBenchmark(spec, problems, where, digest)


class BenchmarkDirSettings(SettingsGroup):
    data_dir: str | None = Field(None, description="folder of benchmark files (else $RAYPIPE_DATA_DIR)")


class BenchmarksSettings(SettingsGroup):
    benchmarks: list[str] = Field(list(PAPER_BENCHMARKS), description="comma-separated benchmark names (default: the "
                                  "paper's five); see raypipe.eval.benchmarks.REGISTRY")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, v):
        return parse_names(v if isinstance(v, str) else ",".join(v))
