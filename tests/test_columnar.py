"""The columnar fast path gives exactly the row path's records, on real data and on edge cases."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raypipe.core.io import Storage
from raypipe.curate.shard import _columnar, _load_rows, load_shard
from tests.conftest import R1, TRAJECTORIES, need_shared_data


def both(path, storage=Storage()):
    """The columnar path's (records, rejects, rows) with its rows numbered as the file's (from 1, as load_block
    numbers them; _columnar counts a block's rows from 0), and the row path's."""
    data = pq.read_table(path) if str(path).endswith(".parquet") else path.read_bytes()
    fast = _columnar(str(path), data)
    if fast is not None:
        records, bad, n, _ = fast
        records = records.set_column(records.schema.get_field_index("row"), "row", pc.add(records["row"], 1))
        fast = (records, [{**r, "row": r["row"] + 1} for r in bad], n)
    slow = _load_rows(str(path), data, 0, 16 << 20, None)
    return fast, slow


def real_files():
    need_shared_data()
    return sorted(TRAJECTORIES.glob("*.jsonl")) + [R1 / "deepseek-r1_aime24.jsonl"]


def test_columnar_equals_row_path_on_real_data():
    for path in real_files():
        fast, slow = both(path)
        assert fast is not None, path
        assert fast[0].equals(slow[0]), path
        assert fast[2] == slow[2]


def test_columnar_edge_cases(tmp_path):
    rows = [
        {"id": "a1", "problem": "What is 1+1? ünïcode ×", "answer": "2", "response": "<think>Perhaps ×2\n\nok</think> \\boxed{2} é"},
        {"problem": "no id", "answer": "3", "response": "<|channel|>analysis<|message|>hm<|end|><|channel|>final<|message|>\\boxed{3}"},
        {"id": "x", "problem": "p", "answer": "4", "response": "plain \\boxed{4}", "extra": {"a": [1, 2]}, "flag": True},
        {"id": "y", "problem": None, "answer": "4", "response": "missing problem......"},
        {"id": "z", "problem": "q", "answer": "5", "response": "<|begin_of_thought|>never closed ∞"},
    ]
    p = tmp_path / "f.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    fast, slow = both(p)
    assert fast is not None
    assert fast[0].equals(slow[0])
    assert [r["row"] for r in fast[1]] == [4] and "missing field" in fast[1][0]["reason"]  # the file's 4th line
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "f.parquet")
    fast_pq, slow_pq = both(tmp_path / "f.parquet")
    assert fast_pq is not None and fast_pq[0].drop_columns(["shard"]).equals(slow_pq[0].drop_columns(["shard"]))


@pytest.mark.parametrize("content", [
    '{"problem": "a", "response": "b"}\n\n{"problem": "c", "response": "d"}\n',  # a blank line keeps row numbers
    '{"problem": "a", "answer": 1.5, "response": "bbbbbbbbbbbb"}\n',  # floats print differently
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
    '{"problem": "a", "response": "b"}\n{"problem": "broken',
])
def test_row_path_takes_what_columnar_cannot(tmp_path, content):
    p = tmp_path / "f.jsonl"
    p.write_text(content)
    fast, slow = both(p)
    assert fast is None
    records, rejects, n = load_shard(str(p), Storage())
    assert records.num_rows + rejects.num_rows == n


def test_columnar_offsets_and_markup_on_hostile_responses(tmp_path):
    responses = [
        "", "ü", "é<think>ü\n\nñ</think>∞ \\boxed{√2}", "plain ünïcode only ×", "<think>unfinished ∞", "∞</think>after",
        "<|end_of_thought|>é<|begin_of_thought|>ü<|end_of_thought|>ñ<|begin_of_solution|>√<|end_of_solution|>ß",
        "ß<|begin_of_thought|>no end", "😀<|channel|>analysis<|message|>é<|end|><|start|>assistant<|channel|>final"
        "<|message|>ü<|return|>", "<think>ü</think>\n<answer>é</answer>ñ", "\r\n\r\n<think>\r\n\r\n</think>\r\n",
        "<think></think>", "😀" * 50 + "<think>" + "é" * 30 + "</think>" + "ü" * 7,
    ]
    rows = [{"id": f"r{i}", "problem": "p", "answer": "1", "response": r,
             "source": "plain" if "<" not in r else "s" if i % 2 else "t"} for i, r in enumerate(responses)]
    rows.append({"id": "x", "problem": "p", "answer": "1", "response": "ü no markup from a source with one", "source": "t"})
    p = tmp_path / "h.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    fast, slow = both(p)
    assert fast is not None and fast[0].equals(slow[0])
    p.write_text("".join(json.dumps(r) + "\n" for r in rows if r["response"].isascii()))  # no code-point pass
    fast, slow = both(p)
    assert fast is not None and fast[0].equals(slow[0])
