"""Loss probe: equal to a direct transformers computation, window-independent, markers aligned, Ray job end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raypipe.diagnostics.loss import LossProbe, marker_spans, marker_token_mask
from raypipe.core.lexicon import get_lexicon

pytestmark = pytest.mark.timeout(300)

PROBLEM = "Find the sum of all integers n such that 1 <= n <= 100."
THINKING = ("Let me solve the problem step by step. First, compute the sum: 1 + 2 + ... + 100.\n\n"
            "Perhaps we can try another approach. Alternatively, pair the terms: 1 + 100 = 101, 50 pairs.\n\n"
            "Wait, let me check the arithmetic again: 50 * 101 = 5050.")
FINAL = "The final answer is \\boxed{5050}."


@pytest.fixture(scope="module")
def probe(tiny_model_path):
    return LossProbe(tiny_model_path, window=1024, dtype="float32").setup()


def test_equals_direct_transformers_computation(probe):
    from raypipe.train.render import render

    p_ids, r_ids, _ = probe.encode(probe.render(PROBLEM, THINKING, FINAL))
    sft = render(probe.tokenizer, PROBLEM, THINKING, FINAL, 100_000).example
    assert sft.input_ids == p_ids + r_ids and sft.labels == [-100] * len(p_ids) + r_ids  # exactly SFT's tokens
    ids = torch.tensor([p_ids + r_ids])
    labels = ids.clone()
    labels[0, : len(p_ids)] = -100
    with torch.no_grad():
        out = probe.model(input_ids=ids, labels=labels)
    logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
    direct = -logp.gather(1, ids[0, 1:, None]).squeeze(1)[len(p_ids) - 1:].numpy()
    direct_entropy = -(logp.exp() * logp).sum(-1)[len(p_ids) - 1:].numpy()

    scores = probe.score(PROBLEM, THINKING, FINAL)
    assert len(scores.loss) == len(r_ids) > 50
    np.testing.assert_allclose(scores.loss, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.entropy, direct_entropy, rtol=1e-5, atol=1e-5)
    # The mean over response tokens is the SFT loss transformers reports with the prompt masked.
    assert scores.loss.mean() == pytest.approx(out.loss.item(), rel=1e-5)
    row = probe.measure({"id": "x", "source": "s", "problem_id": "p", "problem": PROBLEM, "thinking": THINKING,
                         "final": FINAL})
    assert row["mean_loss"] == pytest.approx(float(direct.mean()), rel=1e-5)
    assert row["sum_loss"] == pytest.approx(float(direct.sum()), rel=1e-5)
    assert row["n_routine"] == int((direct < 0.05).sum())
    assert sum(row["decile_count"]) == row["n_tokens"] == len(r_ids)
    assert sum(row["loss_hist"]) == len(r_ids)


@pytest.mark.parametrize("window", [1, 3, 17, 64])
def test_windows_do_not_change_token_losses(probe, window):
    full = probe.score(PROBLEM, THINKING, FINAL, window=100_000)
    part = probe.score(PROBLEM, THINKING, FINAL, window=window)
    np.testing.assert_allclose(part.loss, full.loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(part.entropy, full.entropy, rtol=1e-4, atol=1e-5)


def test_truncation_scores_only_the_tokens_that_fit(tiny_model_path):
    probe = LossProbe(tiny_model_path, max_tokens=40, dtype="float32").setup()
    p_ids, r_ids, _ = probe.encode(probe.render(PROBLEM, THINKING, FINAL))
    s = probe.score(PROBLEM, THINKING, FINAL)
    assert s.truncated and len(s.loss) == 40 - len(p_ids) and s.n_response_tokens == len(r_ids)
    np.testing.assert_allclose(s.loss, LossProbe(tiny_model_path, dtype="float32").setup()
                               .score(PROBLEM, THINKING, FINAL).loss[: len(s.loss)], atol=1e-5)


def test_marker_mask_on_hand_built_offsets():
    offsets = np.array([[0, 3], [3, 7], [7, 8], [8, 12]])
    assert marker_token_mask(offsets, [(2, 4)]).tolist() == [True, True, False, False]
    assert marker_token_mask(offsets, [(7, 8)]).tolist() == [False, False, True, False]
    assert marker_token_mask(offsets, [(12, 14)]).tolist() == [False] * 4


def test_marker_tokens_on_hand_checked_string(probe):
    thinking = ("So x = 2.\n\nPerhaps we try y; alternatively z. Perhapsy is no marker.\n\n"
                "Another idea: ANOTHER one.")
    rendered = probe.render("q", thinking, "Perhaps the answer is 4.")
    text = rendered.completion  # the rendered assistant turn: the canonical reasoning sits at thinking_span
    start, end = rendered.thinking_span
    assert text[start:end] == thinking and text.startswith("<think>\n")
    spans = marker_spans(text, start, end, get_lexicon("paper"))
    # Case-insensitive, whole words only, and only inside the reasoning (not the final "Perhaps").
    assert [text[s:e] for s, e in spans] == ["Perhaps", "alternatively", "Another", "ANOTHER"]
    _, _, offsets = probe.encode(rendered)
    mask = marker_token_mask(offsets, spans)
    # Every flagged token lies on a marker, and the flagged tokens spell out each marker.
    for (a, b), m in zip(offsets, mask):
        if m:
            assert any(a < e and b > s for s, e in spans)
    for s, e in spans:
        covered = "".join(text[a:b] for (a, b), m in zip(offsets, mask) if m and a < e and b > s)
        assert text[s:e] in covered and len(covered) <= e - s + 1  # at most a leading space
    assert not any(m for (a, b), m in zip(offsets, mask) if a >= end)


def test_the_same_trace_in_two_markups_scores_the_same(probe):
    """A harmony row and the same trace as a <think> row: the same rendered text, so the same numbers (the
    harmony channel tokens are no longer scored as routine tokens)."""
    from raypipe.core.formats import FORMATS

    rows = [{"problem": PROBLEM, "response": f"<think>\n{THINKING}\n</think>\n\n{FINAL}"},
            {"problem": PROBLEM, "response": f"<|channel|>analysis<|message|>{THINKING}<|end|><|start|>assistant"
                                             f"<|channel|>final<|message|>{FINAL}<|return|>"}]
    think, harmony = (FORMATS.create("flat").records(r, "s", "x.jsonl", 0)[0] for r in rows)
    assert (think["markup"], harmony["markup"]) == ("think", "harmony")
    a, b = probe.measure(think), probe.measure(harmony)
    assert a["error"] is None and a["n_tokens"] > 50 and a["n_markers"] == 3 and a["n_marker_tokens"] >= 2
    assert {k: v for k, v in a.items() if k != "id"} == {k: v for k, v in b.items() if k != "id"}


def test_loss_probe_job_real_data_local_and_s3(ray_local, tmp_path, s3_bucket, shared_data):
    from diagnostics_fixtures import write_two_sources

    from raypipe.core import io
    from raypipe.diagnostics.config import LossConfig
    from raypipe.diagnostics.loss_job import run_loss_probe

    inp = write_two_sources(tmp_path / "in", n=3)
    endpoint, bucket = s3_bucket
    common = dict(input=str(inp), model="tiny", max_tokens=384, window=100, keep_token_losses=True, num_cpus=2)
    a = run_loss_probe(LossConfig(output=str(tmp_path / "a"), batch_size=1, **common))
    b = run_loss_probe(LossConfig(output=f"s3://{bucket}/lp", batch_size=4, s3_endpoint=endpoint, **common))

    assert a["rows"] == b["rows"] == 7  # 3 + 3 trajectories + 1 unreadable line, nothing lost
    assert set(a["sources"]) == {"DeepSeek-R1", "Sky-T1-math-correct-5K-14B", "(unreadable)"}
    unreadable = a["sources"]["(unreadable)"]
    assert unreadable["scored"] == 0 and sum(unreadable["errors"].values()) == 1
    for s, v in a["sources"].items():
        if v["scored"]:
            assert v["tokens"] > 0 and 0 <= v["routine_share"] <= 1 and v["mean_loss"] > 0
            assert sum(v["loss_hist"]) == v["tokens"] == sum(v["tokens_by_decile"])
    # Batch size (1 vs 4) and storage (local vs S3) do not change any number.
    ta = io.read_parquet_dir(str(tmp_path / "a" / "trajectories"), io.Storage()).sort_by("id").to_pylist()
    tb = io.read_parquet_dir(f"s3://{bucket}/lp/trajectories", io.Storage(endpoint)).sort_by("id").to_pylist()
    assert [r["id"] for r in ta] == [r["id"] for r in tb]
    for ra, rb in zip(ta, tb):
        assert ra["error"] == rb["error"]
        if ra["error"] is None:
            np.testing.assert_allclose(ra["token_loss"], rb["token_loss"], rtol=1e-5, atol=1e-6)
            assert ra["mean_loss"] == pytest.approx(float(np.mean(ra["token_loss"])), rel=1e-5)
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["rows"] == 7
    html = (tmp_path / "a" / "report.html").read_text()
    assert "token-loss CDF per source" in html and "data:image/png;base64" in html

    from raypipe.diagnostics.compare import write_compare

    a_src, b_src = "DeepSeek-R1", "Sky-T1-math-correct-5K-14B"
    rows = write_compare(a_src, b_src, [str(tmp_path / "a")], [], str(tmp_path / "cmp.html"), io.Storage())
    by = {r["metric"]: r for r in rows}
    assert by["mean token loss (nats)"]["a"] == a["sources"][a_src]["mean_loss"]
    assert by["key-token loss (nats)"]["b"] == b["sources"][b_src]["key_token_loss"]
    assert by["mean token loss (nats)"]["same"] == (a["sources"][a_src]["mean_loss"] < a["sources"][b_src]["mean_loss"])
    assert by["Propose share of steps"]["a"] is None and by["Propose share of steps"]["same"] is None
    assert "1.53" in (tmp_path / "cmp.html").read_text()


def test_cli_help_lists_loss_probe():
    from raypipe.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["loss-probe", "--help"])
