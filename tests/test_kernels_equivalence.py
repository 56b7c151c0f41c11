"""The one-pass structure kernels give exactly what splitting into steps and counting per step gives.

The reference below is the split-then-count implementation the fast path replaced, kept here unchanged: real
trajectories, hostile texts (empty, whitespace-only steps, CRLF, unicode spaces and case folds, unfinished
thinking, markers at every edge) and seeded random texts, under every lexicon.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raypipe.core.blank_steps import blank_counts_apply
from raypipe.core.formats import normalize_row
from raypipe.core.lexicon import LEXICONS, Lexicon
from raypipe.core.structure import BYTES_PER_TOKEN, measure, segment_pattern
from tests.conftest import R1, TRAJECTORIES, need_shared_data


def reference_measure(thinking, response, lexicon, segmenter="blank", final=None):
    thinking = pc.fill_null(thinking, "")
    n = len(thinking)
    steps = pc.split_pattern_regex(thinking, segment_pattern(segmenter))
    flat = pc.list_flatten(steps)
    parents = pc.list_parent_indices(steps).to_numpy()
    nonempty = pc.and_(pc.greater(pc.binary_length(flat), 0), pc.invert(pc.utf8_is_space(flat)))
    per_step = pc.count_substring_regex(flat, lexicon.pattern()).to_numpy(zero_copy_only=False)

    def per_row(values):
        return np.bincount(parents, weights=values, minlength=n).astype(np.int64)

    def tokens(texts):
        nbytes = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
        return (nbytes + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN

    n_steps = per_row(nonempty.to_numpy(zero_copy_only=False).astype(np.int64))
    n_branch = per_row((per_step > 0).astype(np.int64))
    n_markers = per_row(per_step.astype(np.int64))
    think_tokens, resp_tokens = tokens(thinking), tokens(pc.fill_null(response, ""))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n_steps > 0, n_branch / np.maximum(n_steps, 1), np.nan)
        per_1k = np.where(think_tokens > 0, 1000.0 * n_markers / np.maximum(think_tokens, 1), 0.0)
    return {
        "n_steps": pa.array(n_steps), "n_branch_steps": pa.array(n_branch),
        "branch_ratio": pa.array(ratio, mask=np.isnan(ratio)), "n_markers": pa.array(n_markers.astype(np.int64)),
        "markers_per_1k_tokens": pa.array(per_1k),
        "n_chars": pc.utf8_length(pc.fill_null(response, "")).cast(pa.int64()),
        "thinking_chars": pc.utf8_length(thinking).cast(pa.int64()),
        "final_chars": pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(
            final if final is not None else pa.nulls(n, pa.string()), ""))).cast(pa.int64()),
        "n_tokens": pa.array(resp_tokens.astype(np.int64)), "thinking_tokens": pa.array(think_tokens.astype(np.int64)),
    }


HOSTILE = [
    "", " ", "\n", "\n\n", "\n\n\n", "\n \n", "\r\n\r\n", "a\r\n\r\nb", "a\r\n\r\n\r\nPerhaps b\r\n", "\t\r \n\r\t\n",
    "Perhaps\n\n\n\nAnother\n\n \t\r\n\nAlternatively", "unfinished Perhaps\n\nstill going", "no markup. Perhaps",
    "   \n\n\t\n\n\u3000\n\n\xa0", "\x1c\n\n\x85\n\n\u200b\n\n\u2028\n\n\x0b\n\n\x0c",
    "ünïcödé Perhaps ×\n\n或许 换个思路\n\nPERHAPS perhapſ ＫAnother Kelvin\u212a", "或许或许\n\n也许，或者\n\n\n等等",
    "Let me\n\ntry again. Let me try\n\nLet  me\n\ttry. Let me\n \ntry. Let me \n\n try. Let\r\n\r\nme try",
    "Wait\n\n\n\nHmm wait\u2028\n\nmaybe\x0c\n\nBut\nmaybe. But\x0c\nmaybe. But\n\x0c\nmaybe. On second\n\nthought",
    "\n\n\n\n\n", "Perhaps", "xPerhaps Perhapsx _Perhaps Perhaps_ Perhaps. 1Perhaps Perhaps1", "\x00Perhaps\x00\n\n\x00",
    "\n  \n  \n  Alternatively\n   \n", "Perhaps\n\n" * 50, "a\n\n\n\n\n\nb\n\n\n\nc\n \n \n \nd", "😀 Perhaps 😀\n\n😀\n\n",
    "\n\nAnother approach\n\n\n", "  leading\n\n  \n\n  trailing  ", "Perhaps\n\nPerhaps\n\n\n\nPerhaps Perhaps\n\n",
]
WORDS = ["Perhaps", "perhaps", "Another", "ALTERNATIVELY", "Wait", "Hmm", "Let", "me", "try", "或许", "也许", "x", "ü",
         "\n", "\n\n", "\n \n", "\r\n\r\n", " ", "\t", "\r", "\u3000", "\xa0", "Let me\n\ntry", "But maybe",
         "On second\nthought", "Let me try", "Another approach", "\x0c", "ſ", "."]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) + rng.choice(["", " ", "\n", ".", "\n\n", "\r\n"]) for _ in range(rng.randint(0, 40)))
            for _ in range(n)]


def real_records():
    need_shared_data()
    out = []
    for path in sorted(TRAJECTORIES.glob("*.jsonl")) + [R1 / "deepseek-r1_aime24.jsonl"]:
        out += [normalize_row(json.loads(line), "flat", "x", str(path), i) for i, line in enumerate(path.open())]
    return out


LEXICON_CASES = {**LEXICONS, "cased": Lexicon("cased", "1", ("Wait", "Perhaps", "Hmm"), True),
                 "no-boundary": Lexicon("nb", "1", ("haps", "Another", "ſ"), False, False),
                 "cased-multi": Lexicon("cased-multi", "1", ("Let me try", "Wait", "But\tmaybe"), True)}


def assert_same(texts, lexicon, segmenter="blank", responses=None, finals=None):
    thinking = pa.array(texts, pa.string())
    responses = pa.array(responses if responses is not None else texts, pa.string())
    finals = pa.array(finals, pa.string()) if finals is not None else None
    got = measure(thinking, responses, lexicon, segmenter, finals)
    want = reference_measure(thinking, responses, lexicon, segmenter, finals)
    assert list(got) == list(want)
    for k in want:
        assert got[k].type == want[k].type, k
        if not got[k].equals(want[k]):
            g, w = got[k].to_pylist(), want[k].to_pylist()
            bad = [i for i in range(len(g)) if g[i] != w[i]]
            raise AssertionError(f"{k}: {len(bad)} rows differ, first {[(texts[i][:80], g[i], w[i]) for i in bad[:3]]}")


@pytest.mark.parametrize("lexicon", sorted(LEXICON_CASES))
def test_one_pass_equals_split_on_real_data(lexicon):
    rows = real_records()
    assert len(rows) == 630
    assert_same([r["thinking"] for r in rows], LEXICON_CASES[lexicon], responses=[r["response"] for r in rows],
                finals=[r["final"] for r in rows])


@pytest.mark.parametrize("lexicon", sorted(LEXICON_CASES))
@pytest.mark.parametrize("segmenter", ["blank", "line", r"\n---\n"])
def test_one_pass_equals_split_on_hostile_and_random_texts(lexicon, segmenter):
    texts = HOSTILE + random_texts(400, seed=len(lexicon))
    assert_same(texts, LEXICON_CASES[lexicon], segmenter, finals=[t[-9:] if len(t) % 3 else None for t in texts])
    assert_same(texts[::-1], LEXICON_CASES[lexicon], segmenter)  # other batch boundaries
    for text in HOSTILE:  # one row alone
        assert_same([text], LEXICON_CASES[lexicon], segmenter)


def test_nulls_chunks_and_empty_batches():
    lx = LEXICONS["paper"]
    thinking = pa.chunked_array([pa.array(["Perhaps\n\nx", None]), pa.array(["", "Another"])])
    got = measure(thinking, pa.chunked_array([pa.array([None, "r"]), pa.array(["", "é"])]), lx)
    want = reference_measure(thinking.combine_chunks(), pa.array([None, "r", "", "é"]), lx)
    assert all(got[k].to_pylist() == want[k].to_pylist() for k in want)
    assert all(len(v) == 0 for v in measure(pa.array([], pa.string()), pa.array([], pa.string()), lx).values())
    sliced = pa.array(HOSTILE, pa.string()).slice(3, 9)
    assert all(measure(sliced, sliced, lx)[k].equals(reference_measure(sliced, sliced, lx)[k]) for k in want)


def test_fast_path_is_taken_where_it_is_exact():
    assert blank_counts_apply(LEXICONS["paper"]) and blank_counts_apply(LEXICONS["paper-zh"])
    assert not blank_counts_apply(LEXICONS["switch"])  # a multi-word marker may span a blank line
    assert not blank_counts_apply(Lexicon("odd", "1", ("...",)))
    assert not blank_counts_apply(Lexicon("empty", "1", ("",)))
    odd = Lexicon("odd", "1", ("...", "?!"), word_boundary=False)
    assert_same(HOSTILE + ["so... ?!\n\n...", "...\n\n\n..."], odd)


def test_hashes_equal_the_per_part_updates():
    import hashlib

    from raypipe.core.schema import hash64, stable_hash

    def reference(*parts, n=16):
        h = hashlib.blake2b(digest_size=n)
        for p in parts:
            h.update(p.encode("utf-8", "surrogatepass"))
            h.update(b"\x1f")
        return h.digest()

    rng = random.Random(0)
    alphabet = ["a", "é", "\x1f", "\ud83d", "\ude00", "😀", "", " ", "\x00"]
    for _ in range(3000):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(0, 4))]
        assert stable_hash(*parts) == reference(*parts).hex() and stable_hash(*parts, n=4) == reference(*parts, n=4).hex()
        assert hash64(*parts) == int.from_bytes(reference(*parts, n=8), "big") >> 1


def test_content_hashes_from_buffers_equal_stable_hash():
    from raypipe.core.schema import stable_hash
    from raypipe.curate.score import content_hashes

    rng = random.Random(1)
    alphabet = ["a", "é", "\x1f", "😀", "", " ", "\x00", "\n\n"]
    cols = {c: ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9))) for _ in range(500)]
            for c in ("source", "problem", "response")}
    table = pa.table(cols)
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 0), table.slice(7)])  # offsets, several chunks
    large = table.cast(pa.schema([(c, pa.large_string()) for c in cols]))
    want = [stable_hash(s, p, r) for s, p, r in zip(cols["source"], cols["problem"], cols["response"])]
    for t in (table, chunked, large, table.slice(3)):
        assert content_hashes(t).to_pylist() == want[500 - t.num_rows:]
    assert content_hashes(table.slice(0, 0)).to_pylist() == []
