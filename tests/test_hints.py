"""The end of a curation run: a source whose answers sit in its reasoning gets the setting that grades them, and a
run that kept nothing says why instead of pointing at a curated/ folder it never wrote."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conftest import R1, need_shared_data
from raypipe.core.formats import normalize_row
from raypipe.core.schema import records_table
from raypipe.core.scoring import Scorer
from raypipe.curate.aggregates import aggregate, merge
from raypipe.curate.config import CurateConfig
from raypipe.curate.hints import ANSWER_FLAG, account, closing_lines


def r1_without_final(n: int = 8) -> list[dict]:
    """Real DeepSeek-R1 chains cut right after </think>: a finished reasoning with its \\boxed{} answer inside, and
    no final part (as many R1 dumps hold them)."""
    need_shared_data()
    rows = []
    for line in next(R1.glob("*.jsonl")).read_text().splitlines():
        row = json.loads(line)
        response = row["response"].strip()
        end = response.find("</think>")
        if response.startswith("<think>") and end > 0 and "\\boxed" in response[:end]:
            rows.append({**row, "response": response[:end + len("</think>")]})
        if len(rows) == n:
            return rows
    pytest.skip("fewer R1 chains than expected")


def curated(rows: list[dict], answer_from: str) -> tuple[dict, dict]:
    """(merged aggregate, manifest-like counts) of the rows decided as the job decides them, in one process."""
    cfg = CurateConfig(input="unused", output="unused", answer_from=answer_from)
    records = records_table([normalize_row(r, "flat", "unknown", "r1.jsonl", i) for i, r in enumerate(rows)])
    scorer = Scorer(cfg.scoring()).setup()
    try:
        decided = scorer.decide(scorer.score(records), cfg.policy())
    finally:
        scorer.close()
    merged = merge([aggregate(decided.slice(0, 3), "a"), aggregate(decided.slice(3), "b")])
    kept = sum(d == "keep" for d in decided.column("decision").to_pylist())
    counts = {"records": len(rows), "kept": kept, "dropped": len(rows) - kept, "rejected": 0}
    return merged, counts


def test_r1_chains_with_the_answer_in_the_reasoning_get_the_answer_from_hint(spawn):  # math-verify workers
    rows = r1_without_final()
    merged, counts = curated(rows, "final")
    assert counts["kept"] == 0
    source = rows[0]["model"]
    assert merged["sources"][source]["boxed_in_reasoning"] == len(rows)
    manifest = {"counts": counts, **account(merged, "final")}
    [hint] = manifest["hints"]
    assert hint["source"] == source and hint["flag"] == ANSWER_FLAG and hint["boxed_in_reasoning"] == len(rows)
    assert manifest["drop_reasons"] == {"verdict:no_answer": len(rows)}
    lines = closing_lines(manifest, "out")
    assert lines[0].startswith("nothing kept") and f"verdict:no_answer {len(rows)}" in lines[0], lines
    assert not any(line.startswith("curated data:") for line in lines)
    assert sum(ANSWER_FLAG in line and source in line for line in lines) == 1

    merged, counts = curated(rows, "final-or-thinking")  # the flag it names: the answers are graded, no hint
    assert counts["kept"] > 0 and merged["sources"][source]["boxed_in_reasoning"] == 0
    assert account(merged, "final-or-thinking")["hints"] == []
    assert closing_lines({"counts": counts, "hints": []}, "out")[0] == "curated data: out/curated"


def decided(source: str, verdicts: list[str], thinking: list[str], complete: list[bool]) -> pa.Table:
    n = len(verdicts)
    return pa.table({
        "source": [source] * n, "id": [f"r{i}" for i in range(n)], "verdict": verdicts,
        "decision": ["keep" if v == "correct" else "drop" for v in verdicts],
        "reason": ["kept" if v == "correct" else f"verdict:{v}; answer from x" for v in verdicts],
        "branch_ratio": [0.1] * n, "n_steps": [3] * n, "n_tokens": [100] * n, "final_chars": [0] * n,
        "thinking": thinking, "thought_complete": complete, "answer_source": pa.nulls(n, pa.string())})


def test_the_hint_needs_most_of_a_source_and_counts_only_finished_boxed_reasoning():
    boxed, plain = "so \\boxed{4}", "so it is 4"
    few = decided("few", ["correct"] * 6 + ["no_answer"] * 4, [boxed] * 10, [True] * 10)
    unfinished = decided("cut", ["no_answer"] * 6, [boxed] * 6, [False] * 6)  # reasoning cut off: not gradable
    no_box = decided("nobox", ["no_answer"] * 5 + ["wrong"], [plain] * 6, [True] * 6)
    merged = merge([aggregate(t) for t in (few, unfinished, no_box)])
    assert [merged["sources"][s]["boxed_in_reasoning"] for s in ("few", "cut", "nobox")] == [4, 0, 0]
    assert merged["sources"]["nobox"]["drop_reasons"] == {"verdict:no_answer": 5, "verdict:wrong": 1}
    hints = {h["source"]: h for h in account(merged, "final")["hints"]}
    assert set(hints) == {"cut", "nobox"}  # "few": 4 of 10 is not most
    assert all(h["flag"] != ANSWER_FLAG and "--format" in h["text"] for h in hints.values())

