"""The public datasets' input formats on fixtures in their exact layouts (tests/fixtures/formats, CARDS.md).

Each fixture is curated by the real job on a local Ray, once from JSONL and once from Parquet with the dataset's
nested Arrow types; every record must match the fixture's expected record. Detection and rejects are checked on the
shard reader without Ray.
"""
from __future__ import annotations

import glob
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.core.errors import LayoutError
from raypipe.core.formats import FORMATS, detect_format
from raypipe.core.io import Storage
from raypipe.core.schema import harmony_reasoning, stable_hash, tool_call_text, tool_output_text
from raypipe.curate.shard import load_shard
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(600)

FIXTURES = ROOT / "tests" / "fixtures" / "formats"
# fixture -> the format that reads it
CASES = {
    "openr1": "openr1",
    "openmathreasoning": "openmathreasoning",
    "nemotron-math-v2": "nemotron",
    "nemotron-post-training-math": "nemotron",
    "am-r1": "am",
    "am-r1-0528": "am",
    "openthoughts": "openthoughts",
    "harmony": "harmony",
}
# Harmony rows are flat rows ({problem, answer, response}): detection picks `flat`, `harmony` is chosen by name.
DETECTED = {**CASES, "harmony": "flat"}
COMPARED = ["id", "source", "problem_id", "problem", "reference_answer", "response", "thinking", "final",
            "thinking_start", "thinking_end", "final_start", "final_end", "thought_complete", "markup", "format",
            "row", "record", "verdict", "answer_extracted", "n_steps", "branch_ratio", "decision", "reason"]


def _schemas() -> dict[str, pa.Schema]:
    spec = importlib.util.spec_from_file_location("fixture_schemas", FIXTURES / "schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCHEMAS


SCHEMAS = _schemas()


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def expected_of(name: str) -> list[dict]:
    return json.loads((FIXTURES / f"{name}.expected.json").read_text())["records"]


def write_input(name: str, kind: str, folder: Path, rows: list[dict] | None = None) -> Path:
    """The fixture (or other rows in its layout) as `<folder>/<name>.<kind>`: JSONL, or Parquet with nested types."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows_of(name) if rows is None else rows
    path = folder / f"{name}.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[name]), path)
    return path


def read_part(out: Path, part: str) -> list[dict]:
    return [r for f in sorted(glob.glob(str(out / part / "*.parquet"))) for r in pq.read_table(f).to_pylist()]


def curate(name: str, kind: str, tmp: Path) -> tuple[dict, list[dict]]:
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    inp = write_input(name, kind, tmp / f"in-{kind}")
    out = tmp / f"out-{kind}"
    run_curate(CurateConfig(input=str(inp.parent), output=str(out), format=CASES[name], num_cpus=2,
                            keep_incorrect=True, keep_unverified=True,
                            verify_timeout_s=60))  # a verdict, not a timeout, on a loaded machine
    manifest = json.loads((out / "manifest.json").read_text())
    records = sorted(read_part(out, "curated") + read_part(out, "dropped"), key=lambda r: (r["row"], r["record"]))
    assert read_part(out, "rejects") == []
    return manifest, records


@pytest.mark.parametrize("name", list(CASES))
def test_curate_fixture(tmp_path, name):
    expected, n_rows = expected_of(name), len(rows_of(name))
    runs = {kind: curate(name, kind, tmp_path) for kind in ("jsonl", "parquet")}
    for kind, (manifest, records) in runs.items():
        c = manifest["counts"]
        assert c["records"] == c["kept"] + c["dropped"] + c["rejected"] and manifest["balanced"], kind
        assert (c["input_rows"], c["records"], c["rejected"]) == (n_rows, len(expected), 0), kind
        per_row: dict[str, int] = {}
        for row in range(n_rows):
            k = str(sum(e["row"] == row for e in expected))
            per_row[k] = per_row.get(k, 0) + 1
        assert manifest["records_per_row"] == per_row, kind
        # the expected records index the fixture's rows from 0; an output row is the file's line, from 1
        assert [(r["row"] - 1, r["record"]) for r in records] == [(e["row"], e["record"]) for e in expected], kind
        for r, e in zip(records, expected):
            where = f"{kind} row {e['row']} record {e['record']}"
            assert r["format"] == CASES[name], where
            assert r["thinking"].strip() == e["thinking"], where
            assert r["final"].strip() == e["final"], where
            assert (r["verdict"], r["source"], r["reference_answer"], r["problem"], r["thought_complete"]) == (
                e["verdict"], e["source"], e["reference_answer"], e["problem"], e["thought_complete"]), where
            assert r["id"] == (e["id"] if e["id"] is not None else stable_hash(r["source"], r["problem"], r["response"]))
            assert "<answer>" not in r["final"] and "</think>" not in r["final"], where
            check_meta(name, json.loads(r["meta"]), e, where)
    (_, from_jsonl), (_, from_parquet) = runs["jsonl"], runs["parquet"]
    for a, b in zip(from_jsonl, from_parquet):
        assert {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}
        assert json.loads(a["meta"]) == json.loads(b["meta"])
    if name == "openr1":  # 3 rows gave 4, 2 and 2 generations
        assert runs["jsonl"][0]["records_per_row"] == {"2": 2, "4": 1}
    check_sft_rendering(from_jsonl, name)


def check_sft_rendering(records: list[dict], name: str) -> None:
    """What SFT trains on holds each record's reasoning: its tokens, in the assistant turn, with loss on them."""
    from raypipe.tiny import build_tiny, load_tokenizer
    from raypipe.train.render import IGNORE, render

    tok = load_tokenizer(build_tiny())
    for r in records:
        out = render(tok, r["problem"], r["thinking"], r["final"], max_len=100_000)
        assert out.status == "ok", (name, r["id"])
        if not r["thinking"].strip():
            continue
        trained = [t for t, label in zip(out.example.input_ids, out.example.labels) if label != IGNORE]
        assert r["thinking"].strip() in tok.decode(trained), (name, r["id"])


def test_openr1_generation_ids_are_stable_across_reruns_and_resume(tmp_path):
    """3 OpenR1 rows in 3 files (shards): 4, 2 and 2 generations give `<uuid>#k` ids; a second run and a run that
    resumes after losing one shard's work give the same ids and the same records."""
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    inp = tmp_path / "in"
    for i, row in enumerate(rows_of("openr1")):
        write_input(f"openr1-{i}", "jsonl", inp, [row])
    uuids = [r["uuid"] for r in rows_of("openr1")]
    want = sorted(f"{u}#{k}" for u, n in zip(uuids, (4, 2, 2)) for k in range(n))

    def run(out: Path) -> list[tuple]:
        run_curate(CurateConfig(input=str(inp), output=str(out), format="openr1", num_cpus=2, keep_incorrect=True))
        return sorted((r["id"], r["verdict"], r["decision"], r["thinking"])
                      for r in read_part(out, "curated") + read_part(out, "dropped"))

    first = run(tmp_path / "a")
    assert [r[0] for r in first] == want
    assert run(tmp_path / "b") == first
    done = sorted((tmp_path / "b" / "_work" / "done").glob("*.json"))
    assert len(done) == 3
    done[1].unlink()  # as if the job died before this shard's completion marker
    assert run(tmp_path / "b") == first


def check_meta(name: str, meta: dict, e: dict, where: str) -> None:
    """What each format keeps beside the canonical columns (nothing the row held is lost)."""
    row = rows_of(name)[e["row"]]
    if name == "openr1":
        k = e["record"]
        assert meta["source"] == row["source"], where  # the problem's origin, not the record's source
        assert meta["correctness_math_verify"] == row["correctness_math_verify"][k], where
        assert meta["is_reasoning_complete"] == row["is_reasoning_complete"][k], where
        assert ("finish_reasons" in meta) == (row["finish_reasons"] is not None), where
        assert ("correctness_llama" in meta) == (row["correctness_llama"] is not None), where
        assert not {"generations", "uuid", "answer", "problem"} & set(meta), where
        assert meta["solution"] == row["solution"] and meta["correctness_count"] == row["correctness_count"]
    elif name == "openmathreasoning":
        assert meta["problem_source"] == row["problem_source"] and meta["inference_mode"] == row["inference_mode"]
        assert not {"generated_solution", "expected_answer", "generation_model"} & set(meta), where
    elif name == "nemotron-math-v2":
        assert meta["uuid"] == row["uuid"] and meta["data_source"] == row["data_source"], where
        assert meta["metadata"] == row["metadata"] and "messages" not in meta, where
    elif name == "nemotron-post-training-math":
        assert meta["reasoning"] == row["reasoning"] and not {"metadata", "uuid", "generator"} & set(meta), where
    elif name == "am-r1":
        assert meta["user_info"]["source"] == row["messages"][0]["info"]["source"], where
        assert meta["assistant_info"] == {"source": row["messages"][1]["info"]["source"]}, where
    elif name == "am-r1-0528":
        info = row["conversations"][1]["info"]
        assert meta["system"] == row["system"] or (row["system"] == "" and "system" not in meta), where
        for k in ("verify_score", "model_name", "ppl", "category", "source"):
            assert meta["assistant_info"][k] == info[k], where
        assert not {"think_content", "answer_content", "ground_truth"} & set(meta["assistant_info"]), where
    elif name == "openthoughts":
        assert meta == {"system": row["system"]}, where
    elif name == "harmony":
        assert meta == {}, where


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_detection_picks_each_dataset_format(tmp_path, kind):
    for name, fmt in DETECTED.items():
        records, rejects, n = load_shard(str(write_input(name, kind, tmp_path / name / kind)), Storage())
        assert set(records.column("format").to_pylist()) == {fmt}, (name, kind)
        assert (records.num_rows, rejects.num_rows, n) == (len(expected_of(name)), 0, len(rows_of(name)))


def test_detection_sees_nested_fields():
    am_0528, openthoughts = rows_of("am-r1-0528")[0], rows_of("openthoughts")[0]
    assert set(am_0528) == set(openthoughts) == {"system", "conversations"}  # the same top-level fields
    assert detect_format(am_0528.keys()) == "am" and detect_format(openthoughts.keys()) == "openthoughts"
    assert detect_format(rows_of("am-r1")[0].keys()) == "am"  # `messages` alone would be chat
    assert detect_format(["messages"]) == "chat"


def test_a_file_that_fits_two_formats_equally_is_ambiguous(tmp_path):
    """A dump that merged OpenR1 and OpenMathReasoning fields into one row fits both equally well."""
    merged = {**rows_of("openmathreasoning")[0], **rows_of("openr1")[0]}
    path = tmp_path / "merged.jsonl"
    path.write_text(json.dumps(merged) + "\n")
    with pytest.raises(LayoutError) as err:
        load_shard(str(path), Storage())
    assert "ambiguous" in str(err.value) and "openr1" in str(err.value) and "openmathreasoning" in str(err.value)
    records, _, _ = load_shard(str(path), Storage(), fmt=FORMATS.create("openr1"))  # --format settles it
    assert records.num_rows == 4


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_unreadable_nemotron_metadata_is_one_reject(tmp_path, kind):
    rows = rows_of("nemotron-post-training-math")
    bad = {**rows[0], "uuid": "bad-metadata", "metadata": "{'expected_answer': '36'"}  # cut off: no JSON, no literal
    path = write_input("nemotron-post-training-math", kind, tmp_path, rows + [bad])
    for fmt in (FORMATS.create("nemotron"), None):
        records, rejects, n = load_shard(str(path), Storage(), fmt=fmt)
        assert (records.num_rows, n) == (3, 4)
        assert rejects.num_rows == 1 and rejects.column("row").to_pylist() == [4]  # the 4th row, from 1
        assert "metadata" in rejects.column("reason")[0].as_py()


def test_nemotron_metadata_is_never_evaluated():
    fmt = FORMATS.create("nemotron")
    row = {**rows_of("nemotron-post-training-math")[0], "metadata": "__import__('os').getpid()"}
    with pytest.raises(ValueError, match="metadata"):
        fmt.records(row, "x", "s", 0)
    row["metadata"] = "['not', 'an', 'object']"
    with pytest.raises(ValueError, match="metadata"):
        fmt.records(row, "x", "s", 0)


def test_openmathreasoning_genselect_rows_are_rejected():
    row = {**rows_of("openmathreasoning")[0], "inference_mode": "genselect"}
    with pytest.raises(ValueError, match="genselect"):
        FORMATS.create("openmathreasoning").records(row, "x", "s", 0)


@pytest.mark.parametrize("header", [
    "<|start|>assistant<|channel|>analysis to=python code<|message|>",  # as gpt-oss writes it
    "<|start|>assistant to=python<|channel|>analysis<|message|>",  # as the renderer writes it
])
def test_harmony_tool_calls_on_the_analysis_channel(header):
    span = (f"Let me compute.<|end|>{header}print(2**10)<|call|>"
            "<|start|>python to=assistant<|channel|>analysis<|message|>1024<|end|>"
            "<|start|>assistant<|channel|>analysis to=browser.search code<|message|>{\"query\": \"2^10\"}<|call|>"
            "<|start|>browser.search to=assistant<|channel|>analysis<|message|>1024<|end|>"
            "<|start|>assistant<|channel|>analysis<|message|>So 1024.<|end|><|start|>assistant")
    assert harmony_reasoning(span) == "\n\n".join([
        "Let me compute.", tool_call_text("python", "print(2**10)"), tool_output_text("1024"),
        tool_call_text("browser.search", '{"query": "2^10"}'), tool_output_text("1024"), "So 1024."])
