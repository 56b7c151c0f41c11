"""`raypipe inspect` on a small curation output: one record by id, the most branching dropped ones of a source, the
rejected and the missing, local and on S3."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.cli import main

THINKING = "We start.\n\nPerhaps x = 2.\n\nCheck: 2 + 2 = 4.\n\nAlternatively, try another way, or perhaps not."


def record(i: int, source: str, decision: str, score: float | None, verdict: str = "correct") -> dict:
    return {"id": f"r{i}", "source": source, "problem": f"What is {i} + 2?", "reference_answer": "4",
            "thinking": THINKING, "final": "So \\boxed{4}.", "answer_extracted": "4" if verdict == "correct" else "5",
            "verdict": verdict, "decision": decision, "n_steps": 4, "n_branch_steps": 2, "branch_ratio": score,
            "branch_score": score, "threshold": 0.5,
            "reason": "kept" if decision == "keep" else "rule:top (highest branch_score, top 10% of its source)"
            if verdict == "correct" else f"verdict:{verdict}"}


def write_output(root: Path) -> list[dict]:
    """manifest.json, curated/ (one file), dropped/ (two files of several row groups), rejects/."""
    kept = [record(i, "alpha", "keep", i / 100) for i in range(3)]
    dropped = [record(10 + i, "alpha" if i % 3 else "beta", "drop", (i * 37 % 11) / 10,
                      "correct" if i % 2 else "wrong") for i in range(12)]
    dropped.append(record(40, "alpha", "drop", None, "no_answer"))  # no score: never among the worst
    for part, rows in (("curated/part-a", kept), ("dropped/part-a", dropped[:7]), ("dropped/part-b", dropped[7:])):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / f"{part}.parquet", row_group_size=3)
    (root / "rejects").mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": "bad", "source": "alpha", "shard": "in.jsonl", "row": 7,
                                          "reason": "invalid record: missing field 'response'"}]),
                   root / "rejects" / "part-a.parquet")
    (root / "manifest.json").write_text(json.dumps({"config": {"lexicon": "paper", "segmenter": "blank"}}))
    return kept + dropped


def test_one_record_by_id(tmp_path, capsys):
    write_output(tmp_path)
    assert main(["inspect", str(tmp_path), "--id", "r13", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== beta / r13\n")
    assert "decision   drop (rule:top (highest branch_score, top 10% of its source))" in out
    assert "verdict    correct" in out and "answer     4" in out and "reference  4" in out
    assert "steps      4 (2 with a marker, marked >)" in out
    lines = out.splitlines()
    assert any(ln.startswith(">    2  **Perhaps** x = 2.") for ln in lines)
    assert any(ln.startswith("     3  Check: 2 + 2 = 4.") for ln in lines)
    assert any(ln.startswith(">    4  **Alternatively**, try **another** way, or **perhaps** not.") for ln in lines)


def test_the_most_branching_dropped_of_a_source(tmp_path, capsys):
    rows = write_output(tmp_path)
    assert main(["inspect", str(tmp_path), "--worst", "3", "--source", "alpha", "--color", "never"]) == 0
    shown = [ln.split(" / ")[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("== ")]
    ranked = sorted((r for r in rows if r["source"] == "alpha" and r["decision"] == "drop"
                     and r["branch_score"] is not None), key=lambda r: (-r["branch_score"], r["id"]))
    assert shown == [r["id"] for r in ranked[:3]]
    assert main(["inspect", str(tmp_path), "--worst", "50", "--color", "never"]) == 0
    every = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("== ")]
    assert len(every) == 12  # every dropped row with a score, of both sources


def test_rejected_missing_and_not_an_output(tmp_path, capsys):
    write_output(tmp_path)
    assert main(["inspect", str(tmp_path), "--id", "bad"]) == 0
    assert "bad was rejected (in.jsonl, row 7): invalid record: missing field 'response'" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path), "--id", "r1", "--source", "beta"]) == 1
    assert "no id 'r1' of source 'beta'" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "curated"), "--id", "r1"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--id", "r1", "--worst", "2"]) == 2


def test_on_s3(tmp_path, s3_bucket, capsys):
    import boto3

    endpoint, bucket = s3_bucket
    write_output(tmp_path)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), bucket, f"out/{f.relative_to(tmp_path)}")
    assert main(["inspect", f"s3://{bucket}/out", "--s3-endpoint", endpoint, "--worst", "1", "--source", "beta",
                 "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== beta / ") and "**Perhaps**" in out


@pytest.mark.parametrize("colour, marked", [("always", "\033[1;33mPerhaps\033[0m"), ("never", "**Perhaps**")])
def test_colour(tmp_path, capsys, colour, marked):
    write_output(tmp_path)
    assert main(["inspect", str(tmp_path), "--id", "r0", "--color", colour]) == 0
    assert marked in capsys.readouterr().out
