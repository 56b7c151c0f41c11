"""Structure metrics: the Arrow kernels against plain Python on real data, lexicon matching, the ablation."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from raypipe.curate.ablate import delete_steps
from raypipe.core.lexicon import LEXICONS, get_lexicon
from raypipe.core.formats import normalize_row
from raypipe.core.structure import measure, measure_python, split_steps
from tests.conftest import R1, TRAJECTORIES, need_shared_data


def _real_thinking():
    need_shared_data()
    texts = []
    for path in sorted(TRAJECTORIES.glob("*.jsonl")) + [R1 / "deepseek-r1_aime24.jsonl"]:
        for i, line in enumerate(path.open()):
            texts.append(normalize_row(json.loads(line), "flat", "x", str(path), i)["thinking"])
    return texts


@pytest.mark.parametrize("lexicon", sorted(LEXICONS))
def test_arrow_kernels_equal_python_on_real_data(lexicon):
    texts = _real_thinking()
    lx = get_lexicon(lexicon)
    got = measure(pa.array(texts), pa.array(texts), lx)
    for i, t in enumerate(texts):
        ref = measure_python(t, lx)
        for k in ("n_steps", "n_branch_steps", "n_markers", "thinking_tokens"):
            assert got[k][i].as_py() == ref[k], (i, k)
        r = got["branch_ratio"][i].as_py()
        assert (r is None and ref["branch_ratio"] is None) or abs(r - ref["branch_ratio"]) < 1e-12


def test_paper_lexicon_boundaries_and_case():
    lx = get_lexicon("paper")
    texts = ["Perhaps we add.\n\nperhaps not.\n\nPerhapsy is no word.\n\nAnotherness too.\n\nALTERNATIVELY, yes.",
             "plain step\n\n\n\n   \n\nsecond step", "", "one step only"]
    m = measure(pa.array(texts), pa.array(texts), lx)
    assert m["n_steps"].to_pylist() == [5, 2, 0, 1]
    assert m["n_branch_steps"].to_pylist() == [3, 0, 0, 0]
    assert m["branch_ratio"].to_pylist() == [0.6, 0.0, None, 0.0]
    # Perhaps, perhaps, ALTERNATIVELY: not "Perhapsy" nor "Anotherness" (word boundaries), whatever the case
    assert m["n_markers"].to_pylist() == [3, 0, 0, 0]


def test_multiword_and_cjk_markers():
    sw = get_lexicon("switch")
    m = measure(pa.array(["Let me\ntry again.\n\nLet metry"]), pa.array([""]), sw)
    assert m["n_branch_steps"].to_pylist() == [1]
    zh = get_lexicon("paper-zh")
    m = measure(pa.array(["我们计算。\n\n或许换个思路。"]), pa.array([""]), zh)
    assert m["n_branch_steps"].to_pylist() == [1] and m["n_markers"].to_pylist() == [2]


def test_lexicon_from_yaml(tmp_path):
    f = tmp_path / "lx.yaml"
    f.write_text("name: mine\nversion: 3\nmarkers: [Wait]\ncase_sensitive: true\n")
    lx = get_lexicon(str(f))
    assert lx.tag == "mine@3"
    assert measure(pa.array(["Wait.\n\nwait."]), pa.array([""]), lx)["n_branch_steps"].to_pylist() == [1]
    with pytest.raises(ValueError, match="unknown lexicon"):
        get_lexicon("nope")


def test_delete_steps_is_seeded_and_keeps_the_rest():
    thinking = "\n\n".join(f"step {i}" for i in range(20))
    response = f"<think>{thinking}</think>\\boxed{{1}}"
    start, end = len("<think>"), len("<think>") + len(thinking)
    a = delete_steps(response, start, end, 0.1, "seed/x")
    b = delete_steps(response, start, end, 0.1, "seed/x")
    assert a == b and a[2] == 2
    new, new_end, _ = a
    steps = split_steps(new[start:new_end])
    assert len(steps) == 18 and set(steps) < set(split_steps(thinking))
    assert new.endswith("</think>\\boxed{1}") and new[new_end:].startswith("</think>")
    assert delete_steps(response, start, end, 0.1, "seed/y")[0] != new
