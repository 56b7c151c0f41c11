"""Reading datasets faithfully: answers from the reasoning when asked, records rather than rows, duplicates,
unverified rows, empty reasoning, any layout through a field mapping, and nothing read silently left out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import R1, ROOT, need_shared_data

pytestmark = pytest.mark.timeout(300)


def curate(tmp_path: Path, name: str, rows: list[dict] | None = None, input_path: Path | None = None, **settings):
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    if input_path is None:
        input_path = tmp_path / f"{name}-in" / "data.jsonl"
        input_path.parent.mkdir(parents=True, exist_ok=True)
        input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"{name}-out"
    manifest = run_curate(CurateConfig(input=str(input_path), output=str(out), num_cpus=2, **settings))
    written = {part: [r for f in sorted((out / part).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
               for part in ("curated", "dropped", "rejects")}
    return manifest, written


def test_answers_from_the_reasoning_only_when_asked_and_only_for_finished_chains(tmp_path):
    need_shared_data()
    plain, out = curate(tmp_path, "final", input_path=R1)
    assert plain["by_source"]["DeepSeek-R1"]["verdicts"]["no_answer"] == 30  # the default reads the final part only
    manifest, out = curate(tmp_path, "thinking", input_path=R1, answer_from="final-or-thinking")
    rows = out["curated"] + out["dropped"]
    finished = [r for r in rows if r["thought_complete"]]
    unfinished = [r for r in rows if not r["thought_complete"]]
    assert len(finished) == 27 and len(unfinished) == 3
    assert all(r["answer_source"] == "thinking:boxed" for r in finished)
    assert all(r["verdict"] == "no_answer" and r["answer_source"] is None for r in unfinished)
    assert all("answer from the reasoning's last \\boxed{}" in r["reason"] for r in finished)
    assert sum(r["verdict"] == "correct" for r in finished) >= 20  # R1 solves most of AIME 2024
    assert manifest["graded_from"] == {"final": 0, "thinking": 27, "none": 3}
    assert len(out["curated"]) > 0  # the R1 source now keeps rows when curated alone


def row(i, problem="What is 2+2?", answer="4", response=None, **extra):
    text = response or f"<think>\nTry {i}.\n\nPerhaps it is 4.\n</think>\nSo \\boxed{{4}}."
    return {"id": f"r{i}", "model": "m", "problem": problem, "answer": answer, "response": text, **extra}


def test_duplicates_are_dropped_and_shared_ids_renamed_stably(tmp_path):
    rows = [row(0), row(1), {**row(1), "id": "copy-of-1"}, row(1),  # the same trajectory three times
            {**row(2), "id": "r3"}, row(3), {**row(4), "id": "r3"}]  # three contents under id r3
    manifest, out = curate(tmp_path, "dups", rows, keep_incorrect=True)
    kept, dropped = out["curated"], out["dropped"]
    dups = [r for r in dropped if r["reason"].startswith("duplicate")]
    assert sorted(r["row"] for r in dups) == [3, 4] and all(r["duplicate_of"] == "r1" for r in dups)  # lines
    ids = [(r["source"], r["id"]) for r in kept + dropped]
    assert len(set(ids)) == len(ids), ids  # no (source, id) twice in the outputs
    renamed = {r["row"]: (r["id"], r["input_id"]) for r in kept + dropped if r["input_id"] is not None}
    # the first r3 (line 5) keeps its id; so does the first r1 (line 2), and its exact copy under the same id is renamed
    assert renamed == {4: ("r1#2", "r1"), 6: ("r3#2", "r3"), 7: ("r3#3", "r3")}
    src = manifest["by_source"]["m"]
    assert (src["duplicates"], src["renamed_ids"]) == (2, 3)
    assert manifest["counts"]["records"] == 7 == len(kept) + len(dropped)
    again, out2 = curate(tmp_path, "dups", rows, keep_incorrect=True, overwrite=True)
    assert sorted((r["row"], r["id"]) for r in out2["curated"] + out2["dropped"]) == \
        sorted((r["row"], r["id"]) for r in kept + dropped)  # stable across reruns


def test_unverified_rows_are_never_ranked_and_kept_only_when_asked(tmp_path):
    branching = "<think>\nPerhaps {i}.\n\nPerhaps.\n\nAlternatively.\n</think>\n\\boxed{{4}}"
    rows = [row(i) for i in range(10)] + [row(100 + i, answer=None, response=branching.format(i=i)) for i in range(5)]
    for r in rows[10:]:
        r.pop("answer")
    manifest, out = curate(tmp_path, "unverified", rows)
    unverified = [r for r in out["dropped"] if r["verdict"] == "unverified"]
    assert len(unverified) == 5 and all(r["reason"] == "verdict:unverified" for r in unverified)
    th = manifest["policy"]["thresholds"]["m"]
    assert th["n_correct"] == 10 and th["n_drop"] == 1  # ranked among the 10 verified rows only
    kept_run, out = curate(tmp_path, "unverified-kept", rows, keep_unverified=True)
    kept = [r for r in out["curated"] if r["verdict"] == "unverified"]
    assert len(kept) == 5 and all(r["reason"].startswith("kept (unverified") for r in kept)
    assert kept_run["policy"]["thresholds"]["m"] == th
    assert kept_run["by_source"]["m"]["unverified_branch_ratio_quantiles"]["p50"] == 1.0


def test_records_not_rows_and_what_was_not_read(tmp_path):
    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    rows = [{"id": "a", "messages": [turn("user", "1+1?"), turn("assistant", "<think>\nPerhaps 2.\n</think>\n\\boxed{2}")],
             "answer": "2", "note": "a comment the format does not read"},
            {"id": "b", "messages": [turn("user", "only a question")], "answer": "2"},  # no assistant turn: one reject
            {"id": "c", "messages": [turn("user", "2+2?"), turn("assistant", "\\boxed{4}")], "answer": "4"}]
    manifest, out = curate(tmp_path, "records", rows, keep_incorrect=True)
    c = manifest["counts"]
    assert (c["input_rows"], c["records"], c["rejected"]) == (3, 3, 1)
    assert c["records"] == c["kept"] + c["dropped"] + c["rejected"]
    assert out["rejects"][0]["row"] == 2 and "assistant" in out["rejects"][0]["reason"]  # the file's line 2
    src = manifest["by_source"]["data"]
    assert src["unconsumed_text_fields"] == {"note": 1}
    # c has no markup while its source's other response uses <think>: read as reasoning never closed, no final part
    assert src["empty_final"] == 1 and src["empty_thinking"] == 0
    report = (tmp_path / "records-out" / "report.html").read_text()
    assert "note (1)" in report and "3 input rows gave 3 records" in report


def test_empty_reasoning_is_dropped_when_the_format_carries_one(tmp_path):
    rows = [{"id": "full", "problem": "1+1?", "answer": "2", "model": "sky",
             "response": "<|begin_of_thought|>\n\nPerhaps 2.\n\n<|end_of_thought|>\n<|begin_of_solution|>\\boxed{2}"
                         "<|end_of_solution|>"},
            {"id": "empty", "problem": "1+1?", "answer": "2", "model": "sky",
             "response": "<|begin_of_thought|>\n\n<|end_of_thought|>\n<|begin_of_solution|>\\boxed{2}<|end_of_solution|>"}]
    manifest, out = curate(tmp_path, "empty", rows, format="sky-t1", drop_top=0.0)
    by_id = {r["id"]: r for r in out["curated"] + out["dropped"]}
    assert by_id["full"]["decision"] == "keep"
    assert by_id["empty"]["decision"] == "drop" and by_id["empty"]["reason"] == "empty reasoning (format sky-t1 carries one)"
    assert manifest["by_source"]["sky"]["empty_thinking"] == 1


def test_any_layout_through_a_field_mapping_on_the_cli(spawn, tmp_path):
    rows = [{"q": {"text": "What is 3+3?", "ref": "6"}, "a": [{"content": "draft"},
                                                                {"content": "<think>\nPerhaps 6.\n</think>\n\\boxed{6}"}],
             "who": {"name": "teacher"}, "uid": "x1"}]
    (tmp_path / "in.jsonl").write_text(json.dumps(rows[0]) + "\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(tmp_path / "in.jsonl"),
                           "--output", str(out), "--num-cpus", "2", "--drop-top", "0",
                           "--fields", "problem=q.text,response=a[-1].content,answer=q.ref,source=who.name,id=uid"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = pq.read_table(next((out / "curated").glob("*.parquet"))).to_pylist()[0]
    assert (rec["id"], rec["source"], rec["problem"], rec["reference_answer"], rec["verdict"]) == \
        ("x1", "teacher", "What is 3+3?", "6", "correct")
    assert rec["thinking"].strip() == "Perhaps 6." and rec["format"] == "fields"
    assert json.loads(rec["meta"]) == {}  # every field the mapping reads is consumed at its root
