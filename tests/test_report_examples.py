"""The report's examples and counts by reason: picked from a bounded, deterministic, order-independent aggregate;
steps and markers as the scorer counts them; the field that named the source is not "unread"."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from raypipe.core.lexicon import get_lexicon
from raypipe.core.policy import Policy, rank_keys, tiebreaks
from raypipe.core.reasons import reason_kind, reject_kind
from raypipe.core.structure import measure
from raypipe.core.trace_view import split_at, steps, view
from raypipe.curate import examples as ex
from raypipe.curate.aggregates import aggregate, merge
from tests.conftest import R1, TRAJECTORIES
from tests.test_aggregates import random_chunks

LEXICON = get_lexicon("paper")
REASONS = {"wrong": "verdict:wrong", "no_answer": "verdict:no_answer; answer from the reasoning's last \\boxed{}",
           "timeout": "verdict:timeout"}


def decided(n: int, seed: int = 0) -> pa.Table:
    """Decided records as the decision leaves them: correct rows kept or dropped by the rule at a threshold per
    source, the others dropped with their verdict; texts long enough to be cut."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        source = rng.choice(["alpha", "beta"])
        verdict = rng.choice(["correct"] * 3 + list(REASONS))
        score = rng.choice([None, rng.randrange(50) / 50])
        over = verdict == "correct" and score is not None and score >= 0.8
        reason = ("rule:top (highest branch_score, top 10% of its source)" if over else
                  "kept" if verdict == "correct" else REASONS[verdict])
        steps_ = ["Perhaps we try x." if rng.random() < (score or 0) else "We compute."
                  for _ in range(rng.randint(1, 9))]
        rows.append({"source": source, "id": f"r{i}", "verdict": verdict, "decision": "drop" if over or
                     verdict != "correct" else "keep", "reason": reason, "branch_score": score, "branch_ratio": score,
                     "threshold": 0.8, "n_steps": len(steps_), "n_branch_steps": sum("Perhaps" in s for s in steps_),
                     "n_tokens": rng.randrange(10, 9000), "final_chars": 9, "problem": "P" * rng.choice([10, 4000]),
                     "thinking": "\n\n".join(steps_) + "x" * rng.choice([0, 20_000]), "final": "\\boxed{1}",
                     "answer_extracted": "1", "reference_answer": "1"})
    return pa.Table.from_pylist(rows)


def examples_of(agg: dict) -> dict:
    return {s: a["examples"] for s, a in agg["sources"].items()}


def test_examples_are_bounded_deterministic_and_independent_of_chunking_and_merge_order():
    table = decided(1500)
    policy = Policy()
    whole = examples_of(merge([aggregate(table, policy=policy)]))
    rng = random.Random(4)
    for _ in range(4):
        parts = [json.loads(json.dumps(aggregate(c, policy=policy))) for c in random_chunks(table, rng)]
        rng.shuffle(parts)
        half = len(parts) // 2
        assert examples_of(merge(parts)) == whole
        assert examples_of(merge([merge(parts[half:]), merge(parts[:half])])) == whole
    for source, cats in whole.items():
        assert set(cats) == {"most_branching", "over_threshold", "under_threshold", "reason:verdict:wrong",
                             "reason:verdict:no_answer", "reason:verdict:timeout"}
        for rows in cats.values():
            assert len(rows) == ex.PER_CATEGORY
            for e in rows:
                assert len(e["thinking"]) <= ex.THINKING_CHARS and len(e["problem"]) <= ex.TEXT_CHARS
        assert any(e["cut_chars"] > 0 for rows in cats.values() for e in rows)  # long reasoning was cut, and says so
    assert len(json.dumps(whole)) < 2 * 6 * ex.PER_CATEGORY * (ex.THINKING_CHARS + 2 * ex.TEXT_CHARS + 2000)


def test_the_examples_are_the_ones_the_orders_name():
    table = decided(800, seed=1)
    got = examples_of(merge([aggregate(c, policy=Policy()) for c in random_chunks(table, random.Random(2))]))
    rows = table.to_pylist()
    primary, tb = rank_keys(table, Policy(), table.column("branch_score").to_numpy(zero_copy_only=False))
    by_id = {r["id"]: (p, t) for r, p, t in zip(rows, primary, tb)}
    for source in ("alpha", "beta"):
        mine = [r for r in rows if r["source"] == source]
        ids = lambda cat: [e["id"] for e in got[source][cat]]  # noqa: E731
        dropped = [r for r in mine if r["decision"] == "drop" and r["branch_score"] is not None]
        top = sorted(r["branch_score"] for r in dropped)[-ex.PER_CATEGORY:]
        assert sorted(e["branch_score"] for e in got[source]["most_branching"]) == top
        kept = sorted((r for r in mine if r["decision"] == "keep" and r["branch_score"] is not None),
                      key=lambda r: by_id[r["id"]], reverse=True)
        assert ids("under_threshold") == [r["id"] for r in kept[:ex.PER_CATEGORY]]
        ruled = sorted((r for r in mine if r["reason"].startswith("rule:")), key=lambda r: by_id[r["id"]])
        assert ids("over_threshold") == [r["id"] for r in ruled[:ex.PER_CATEGORY]]
        wrong = [r for r in mine if r["verdict"] == "wrong"]
        hashes = dict(zip([r["id"] for r in wrong], tiebreaks([source] * len(wrong), [r["id"] for r in wrong])))
        assert ids("reason:verdict:wrong") == sorted(hashes, key=hashes.get)[:ex.PER_CATEGORY]


def test_dropped_rows_are_counted_by_reason():
    table = decided(600, seed=3)
    m = merge([aggregate(c) for c in random_chunks(table, random.Random(5))])
    for source, a in m["sources"].items():
        mine = [r for r in table.to_pylist() if r["source"] == source and r["decision"] == "drop"]
        assert sum(a["drop_reasons"].values()) == a["decisions"]["drop"] == len(mine)
        assert a["drop_reasons"]["verdict:no_answer"] == sum(r["verdict"] == "no_answer" for r in mine)
        assert a["drop_reasons"]["rule:top"] == sum(r["reason"].startswith("rule:") for r in mine)


def test_reason_kinds():
    assert reason_kind("rule:top (highest branch_score, top 10% of its source); answer from x") == "rule:top"
    assert reason_kind("duplicate (the same source, problem and response as id r7)") == "duplicate"
    assert reason_kind("verdict:no_answer") == "verdict:no_answer"
    assert reason_kind("kept (unverified: no reference answer)") == "kept"
    assert reject_kind("invalid record: response of 123 chars is over the limit of 100") == \
        "invalid record: response of N chars is over the limit of N"


def test_steps_and_markers_are_the_scorers_on_real_reasoning(shared_data):
    from raypipe.curate.shard import load_shard
    from raypipe.core.io import Storage

    texts = []
    for f in [*sorted(R1.glob("*.jsonl")), *sorted(TRAJECTORIES.glob("*aime24*.jsonl"))]:
        texts += load_shard(str(f), Storage())[0].column("thinking").to_pylist()
    for segmenter in ("blank", "line"):
        counts = measure(pa.array(texts), pa.array(texts), LEXICON, segmenter)
        for i, text in enumerate(texts):
            got = steps(text, LEXICON, segmenter)
            assert len(got) == counts["n_steps"][i].as_py()
            assert sum(s.branch for s in got) == counts["n_branch_steps"][i].as_py()
            assert sum(len(s.markers) for s in got) == counts["n_markers"][i].as_py()
            assert all(s.text.strip() for s in got)
    assert sum(len(s.markers) for t in texts for s in steps(t, LEXICON)) > 100


def test_a_folded_step_keeps_its_text_and_markers_whole():
    (step,) = steps("We try. Perhaps x is 2. Alternatively it is 3, or perhaps 4.", LEXICON)
    assert step.markers == ["Perhaps", "Alternatively", "perhaps"]
    for at in range(len(step.text) + 1):
        head, tail = split_at(step.pieces, at)
        assert "".join(t for t, _ in head + tail) == step.text
        assert [t for t, m in head + tail if m] == step.markers
    v = view({"id": "x", "source": "s", "thinking": step.text, "branch_ratio": float("nan")}, LEXICON)
    assert v.branch_ratio is None and v.branch_steps == 1


@pytest.mark.parametrize("rows, unread", [
    ([{"model": "m", "problem": "p", "answer": "1", "response": "r", "note": "n"}], {"note"}),  # columnar path
    ([{"model": "m", "problem": "p", "answer": "1", "response": "r"}, {"model": None, "problem": "q", "answer": "1",
      "response": "r"}], set()),  # a null model: the row path
    ([{"source": "s", "model": "m", "problem": "p", "answer": "1", "response": "r"}], {"model"}),  # source named it
])
def test_the_field_that_named_the_source_is_not_unread(rows, unread):
    from raypipe.curate.score import unconsumed_text
    from raypipe.curate.shard import load_block

    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    records, _, _ = load_block("in/file.jsonl", data, 0)
    listed = {f for x in unconsumed_text(records.column("meta")).to_pylist() for f in (x or "").split(",") if f}
    assert listed == unread
    assert records.column("source").to_pylist()[0] == rows[0].get("source", "m")


@pytest.mark.parametrize("lo, hi", [(2000, 9000), (800, 30_000), (20, 40_000)])
def test_the_length_axis_has_ticks_to_read(lo, hi):
    from raypipe.core.html import pyplot
    from raypipe.curate.report import log_axis

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([lo, (lo * hi) ** 0.5, hi], [1, 2, 3])
    log_axis(ax.xaxis, ax.set_xscale)
    fig.canvas.draw()
    a, b = ax.get_xlim()
    labels = [t.get_text() for t in ax.get_xticklabels() if a <= t.get_position()[0] <= b and t.get_text()]
    plt.close(fig)
    assert 3 <= len(labels) <= 14, labels


def test_every_verdict_has_its_colour():
    from raypipe.core.html import VERDICT_COLOURS
    from raypipe.core.verify import VERDICTS

    assert set(VERDICT_COLOURS) == set(VERDICTS)
    assert len(set(VERDICT_COLOURS.values())) == len(VERDICTS)
    assert VERDICT_COLOURS["correct"] not in (VERDICT_COLOURS["no_answer"], VERDICT_COLOURS["wrong"])
