"""Format adapters and reasoning markup, on realistic samples; readers for every input encoding."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from raypipe.core.io import Storage, list_inputs
from raypipe.core.errors import LayoutError, RowError
from raypipe.core.formats import detect_format, normalize_row
from raypipe.core.schema import split_reasoning
from raypipe.curate.shard import load_shard
from tests.conftest import R1, TRAJECTORIES, need_shared_data

HARMONY = ("<|start|>assistant<|channel|>analysis<|message|>We need the sum.\n\nPerhaps 2+2.\n\nAlternatively count."
           "<|end|><|start|>assistant<|channel|>final<|message|>The answer is \\boxed{4}.<|return|>")


def _first(path):
    with open(path) as f:
        return json.loads(f.readline())


def test_flat_sky_t1_row():
    need_shared_data()
    raw = _first(TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl")
    rec = normalize_row(raw, "flat", "fallback", "s", 0)
    assert rec["id"] == raw["id"] and rec["source"] == raw["model"]
    assert rec["reference_answer"] == raw["answer"] and rec["markup"] == "sky"
    assert rec["thought_complete"] is True and "\\boxed" in rec["final"]
    assert "<|begin_of_thought|>" not in rec["thinking"] and "<|end_of_thought|>" not in rec["thinking"]
    assert rec["response"][rec["final_start"]:rec["final_end"]] == rec["final"]
    meta = json.loads(rec["meta"])
    assert meta["pred"] == raw["pred"] and meta["correct"] == raw["correct"] and "response" not in meta


def test_r1_think_rows():
    need_shared_data()
    rows = [json.loads(line) for line in open(R1 / "deepseek-r1_aime24.jsonl")]
    recs = [normalize_row(r, "flat", "r1", "s", i) for i, r in enumerate(rows)]
    assert {r["markup"] for r in recs} == {"think"}
    assert sum(not r["thought_complete"] for r in recs) == 3  # three chains are cut off without </think>
    done = [r for r in recs if r["thought_complete"]]
    assert all("</think>" not in r["thinking"] and not r["thinking"].startswith("```") for r in done)


def test_chat_with_reasoning_content_and_think_tags():
    row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2+2?"},
                        {"role": "assistant", "content": "\\boxed{4}", "reasoning_content": "Perhaps 4.\n\nYes."}],
           "answer": 4, "source": "api"}
    rec = normalize_row(row, "chat", "x", "s", 0)
    assert (rec["problem"], rec["reference_answer"], rec["thinking"], rec["final"]) == ("What is 2+2?", "4", "Perhaps 4.\n\nYes.", "\\boxed{4}")
    assert rec["markup"] == "reasoning_content" and json.loads(rec["meta"]) == {}
    row = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>a\n\nb</think>\nSo \\boxed{1}"}],
           "reference_answer": "1"}
    rec = normalize_row(row, "chat", "chat-file", "s", 0)
    assert rec["thinking"] == "a\n\nb" and rec["final"].strip() == "So \\boxed{1}" and rec["source"] == "chat-file"


def test_sharegpt_harmony():
    row = {"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": HARMONY}],
           "reference_answer": "4", "id": "h1"}
    rec = normalize_row(row, "sharegpt", "gptoss", "s", 0)
    assert rec["markup"] == "harmony" and rec["thought_complete"]
    assert rec["thinking"].startswith("We need the sum.") and rec["thinking"].endswith("Alternatively count.")
    assert rec["final"] == "The answer is \\boxed{4}."


@pytest.mark.parametrize("response, complete, final", [
    ("<think>abc", False, ""),
    ("abc</think>\\boxed{1}", True, "\\boxed{1}"),
    ("<|begin_of_thought|>abc", False, ""),
    ("abc<|end_of_thought|>\n\n<|begin_of_solution|>x<|end_of_solution|>", True, "x"),
    ("<|channel|>analysis<|message|>abc", False, ""),
    ("plain text \\boxed{2}", True, "plain text \\boxed{2}"),
])
def test_split_reasoning(response, complete, final):
    s = split_reasoning(response)
    assert (s.complete, s.final) == (complete, final)


def test_markupless_response_from_markup_source_is_unfinished():
    s = split_reasoning("so the answer is 9", expected_markup="sky")
    assert not s.complete and s.final == "" and s.thinking == "so the answer is 9"


def test_unknown_layout_names_fields():
    with pytest.raises(LayoutError) as e:
        detect_format(["prompt_text", "gen"])
    assert "prompt_text" in str(e.value) and "messages" in str(e.value) and "response" in str(e.value)


@pytest.mark.parametrize("row, msg", [
    ({"problem": "p"}, "missing field"),
    ({"problem": "p", "response": ["not", "text"]}, "must be a string"),
    ({"messages": "nope"}, "list of turns"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant"),
    ([1, 2], "not an object"),
])
def test_row_errors(row, msg):
    with pytest.raises(RowError, match=msg):
        normalize_row(row, "chat" if isinstance(row, dict) and "messages" in row else "flat", "x", "s", 0)


def _rows(n=5):
    return [{"id": f"r{i}", "problem": f"What is {i}+1?", "answer": str(i + 1),
             "response": f"<think>Perhaps {i}.\n\nthen</think>\\boxed{{{i + 1}}}"} for i in range(n)]


def test_every_encoding_reads_the_same_rows(tmp_path):
    rows = _rows()
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(text)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(text))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "_ignored.jsonl").write_text("garbage")
    storage = Storage()
    files = list_inputs(str(tmp_path), storage)
    assert [f.rsplit("/", 1)[1] for f in files] == ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet"]
    assert len(list_inputs(str(tmp_path / "*.jsonl*"), storage)) == 3
    for f in files:
        records, rejects, n = load_shard(f, storage)
        assert n == 5 and rejects.num_rows == 0
        assert records.column("id").to_pylist() == [r["id"] for r in rows]
        assert records.column("final").to_pylist() == [f"\\boxed{{{i + 1}}}" for i in range(5)]


def test_unknown_layout_file_stops_with_the_fields(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt_text": "a", "gen": "b"}) + "\n")
    with pytest.raises(LayoutError, match="prompt_text"):
        load_shard(str(tmp_path / "x.jsonl"), Storage())
