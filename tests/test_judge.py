"""Step judge: the parser on valid / reordered / truncated / garbage answers from a real HTTP server, transition
matrices on hand-built sequences, and the keyword judge on the real trajectories."""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from raypipe.diagnostics.judge import (UNLABELLED, KeywordJudge, build_requests, correlation, label_shares,
                                       parse_labels, transition_counts, transition_probs)

pytestmark = pytest.mark.timeout(300)

VALID = '{"labels": [{"step": 4, "label": "propose"}, {"step": 5, "label": "deduce"}, {"step": 6, "label": "verify"}]}'


@pytest.mark.parametrize("text,labels,status", [
    (VALID, ["propose", "deduce", "verify"], "ok"),
    # reordered entries and keys, upper case labels
    ('{"labels": [{"label": "VERIFY", "step": 6}, {"label": "propose", "step": 4}, {"label": "deduce", "step": 5}]}',
     ["propose", "deduce", "verify"], "ok"),
    # truncated mid-answer: complete pairs are kept
    ('{"labels": [{"step": 4, "label": "propose"}, {"step": 5, "label": "ded', ["propose", UNLABELLED, UNLABELLED],
     "partial"),
    ("I'm sorry, I can't label these steps.", [UNLABELLED] * 3, "failed"),
    ("", [UNLABELLED] * 3, "failed"),
    (None, [UNLABELLED] * 3, "failed"),
    ('Sure!\n```json\n{"labels": [{"step": 4, "label": "other"}, {"step": 5, "label": "other"}, '
     '{"step": 6, "label": "deduce"}]}\n```', ["other", "other", "deduce"], "ok"),
    ('["propose", "deduce", "deduce"]', ["propose", "deduce", "deduce"], "ok"),
    ('{"4": "verify", "5": "propose", "6": "other"}', ["verify", "propose", "other"], "ok"),
    # unknown label, out-of-range step, conflicting duplicate
    ('{"labels": [{"step": 4, "label": "ponder"}, {"step": 9, "label": "deduce"}, {"step": 5, "label": "deduce"},'
     ' {"step": 6, "label": "verify"}, {"step": 6, "label": "propose"}]}', [UNLABELLED, "deduce", UNLABELLED], "partial"),
    ('{"labels": "propose"}', [UNLABELLED] * 3, "failed"),
    ("[" * 5000 + "]" * 5000, [UNLABELLED] * 3, "failed"),
])
def test_parser(text, labels, status):
    p = parse_labels(text, first=3, count=3)
    assert p.labels == labels and p.status == status


def test_requests_number_steps_globally():
    reqs = build_requests("What is 1+1?", [f"step text {i}" for i in range(7)], steps_per_request=3)
    assert [(r["first"], r["count"]) for r in reqs] == [(0, 3), (3, 3), (6, 1)]
    user = reqs[1]["messages"][1]["content"]
    assert "[Step 4]\nstep text 3" in user and "[Step 6]\nstep text 5" in user and "[Step 7]" not in user
    assert "Label steps 4 to 6." in user and "JSON" in reqs[1]["messages"][0]["content"]


def test_transition_matrix_on_hand_built_sequences():
    seqs = [["propose", "propose", "deduce", "verify"],
            ["propose", UNLABELLED, "propose", "propose", "other"],
            ["deduce"], []]
    c = transition_counts(seqs)
    # order: propose, deduce, verify, other
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 2  # p->p in seq 1 and the last p->p in seq 2 (pairs with an unlabelled step are skipped)
    expected[0, 1] = 1
    expected[1, 2] = 1
    expected[0, 3] = 1
    assert (c == expected).all()
    p = transition_probs(c)
    assert p[0] == pytest.approx([0.5, 0.25, 0.0, 0.25]) and p[1] == [0.0, 0.0, 1.0, 0.0] and p[2] == [None] * 4
    counts, shares = label_shares(seqs)
    assert counts == {"propose": 5, "deduce": 2, "verify": 1, "other": 1, UNLABELLED: 1}
    assert shares["propose"] == pytest.approx(5 / 9) and sum(shares.values()) == pytest.approx(1.0)


def test_correlation_hand_values():
    assert correlation([1, 2, 3, 4], [10, 20, 30, 40])["pearson"] == pytest.approx(1.0)
    assert correlation([1, 2, 3, 4], [1, 4, 9, 100])["spearman"] == pytest.approx(1.0)
    assert correlation([1, 2, None, 4], [4, 3, 2, None]) == {"n": 2, "pearson": None, "spearman": None}
    assert correlation([1, 1, 1], [1, 2, 3])["pearson"] is None


def test_keyword_judge_rules():
    j = KeywordJudge("paper")
    assert j.label("Perhaps we should factor it instead.") == "propose"
    assert j.label("ALTERNATIVELY, use symmetry.") == "propose"
    assert j.label("Let me check: 3 * 4 = 12, correct.") == "verify"
    assert j.label("So x = 12 - 5 = 7.") == "deduce"
    assert j.label("Okay.") == "other"
    assert j.label("Perhapsy") == "other"  # whole words only


# --- a real OpenAI-compatible server on 127.0.0.1 that returns fixed answers -----------------------

def expected_label(step: int) -> str:
    return ["propose", "deduce", "verify", "other"][step % 4]


BUSY_HITS: Counter = Counter()  # requests per prompt in MODE=busy


def make_app():
    app = FastAPI()

    def reply(text: str) -> dict:
        return {"id": "x", "object": "chat.completion", "model": "fixed",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "fixed", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        user = body["messages"][-1]["content"]
        found = re.search(r"MODE=(\w+)", user)
        mode = found.group(1) if found else "valid"
        lo, hi = map(int, re.search(r"Label steps (\d+) to (\d+)\.", user).groups())
        items = [{"step": k, "label": expected_label(k)} for k in range(lo, hi + 1)]
        if mode == "valid":
            return reply(json.dumps({"labels": items}))
        if mode == "reordered":
            return reply(json.dumps({"labels": [{"label": i["label"], "step": i["step"]} for i in reversed(items)]}))
        if mode == "truncated":  # cut inside the last entry: all but the last step are recoverable
            full = json.dumps({"labels": items})
            return reply(full[: full.rfind('"label"') + 12])
        if mode == "busy":  # the first request of each prompt: 503 + Retry-After: 1, then the answer
            BUSY_HITS[user] += 1
            if BUSY_HITS[user] == 1:
                return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "1"})
            return reply(json.dumps({"labels": items}))
        if mode == "garbage":
            return reply("As an AI model I find these steps fascinating. \u2728")
        if mode == "notjson":
            return PlainTextResponse("<html>bad gateway</html>")
        return JSONResponse({"error": "overloaded"}, status_code=500)

    return app


@pytest.fixture(scope="module")
def fixed_server():
    import uvicorn
    from conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


MODES = ["valid", "reordered", "truncated", "garbage", "notjson", "error500"]


def test_openai_backend_against_fixed_server(ray_local, tmp_path, fixed_server):
    from raypipe.diagnostics.judge_job import JudgeConfig, run_judge

    rows = []
    for mode in MODES:
        for k in range(2):
            steps = [f"Step {i} of trajectory {k}: we compute {i} + {k} = {i + k}." for i in range(5)]
            rows.append({"id": f"{mode}-{k}", "source": mode, "problem": f"MODE={mode} What is {k}?",
                         "answer": str(k), "response": "<think>" + "\n\n".join(steps) + "</think> \\boxed{1}"})
    rows.append({"id": "nosteps", "source": "valid", "problem": "MODE=valid", "answer": "1", "response": "<think></think>1"})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = JudgeConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out"), backend="openai",
                      endpoint=fixed_server, steps_per_request=3, timeout_s=10, max_retries=1, num_cpus=2)
    summary = run_judge(cfg)
    assert summary["rows"] == len(rows)
    s = summary["sources"]
    for mode in ("valid", "reordered"):
        assert s[mode]["unlabelled_rate"] == 0 and s[mode]["request_failure_rate"] == 0
        assert s[mode]["requests"] == 4  # 2 trajectories x ceil(5 / 3); the empty trajectory sends none
    assert s["truncated"]["partial_requests"] == 4 and s["truncated"]["failed_requests"] == 0
    assert s["truncated"]["unlabelled_rate"] == pytest.approx(4 / 10)
    for mode in ("garbage", "notjson", "error500"):
        assert s[mode]["unlabelled_rate"] == 1.0 and s[mode]["request_failure_rate"] == 1.0
        assert s[mode]["propose_share"] is None

    from raypipe.core import io

    out = {r["id"]: r for r in io.read_parquet_dir(str(tmp_path / "out" / "trajectories"), io.Storage()).to_pylist()}
    want = [expected_label(k) for k in range(1, 6)]
    assert out["valid-0"]["labels"] == want and out["reordered-1"]["labels"] == want
    # Truncated answers: the last step of each request (3 and 5) is lost, the rest survives.
    assert out["truncated-0"]["labels"] == [want[0], want[1], UNLABELLED, want[3], UNLABELLED]
    assert out["nosteps"]["labels"] == [] and out["nosteps"]["n_requests"] == 0
    assert any("HTTP 500" in e for e in out["error500-0"]["request_errors"])
    assert any("not JSON" in e for e in out["notjson-0"]["request_errors"])
    assert "transition matrix" in (tmp_path / "out" / "report.html").read_text()


def test_llm_judge_waits_out_retry_after(fixed_server):
    """A 503 with Retry-After: 1 is sent again after the second it asks for (not the 0.5 s backoff), then answered."""
    from raypipe.diagnostics.judge_backends import OpenAIJudge
    from raypipe.diagnostics.judge_job import JudgeConfig

    cfg = JudgeConfig(input="x", output="y", backend="openai", endpoint=fixed_server, timeout_s=10, max_retries=1)
    judge = OpenAIJudge.from_config(cfg).setup()
    request = build_requests("MODE=busy What is 1?", ["We compute 1.", "Check: 1 = 1."], steps_per_request=3)[0]
    try:
        t0 = time.monotonic()
        text, err = judge.chat(request["messages"])
        elapsed = time.monotonic() - t0
    finally:
        judge.close()
    assert err is None and parse_labels(text, 0, 2).labels == [expected_label(1), expected_label(2)]
    assert BUSY_HITS[request["messages"][-1]["content"]] == 2
    assert 0.95 <= elapsed < 5, elapsed


def test_keyword_judge_on_real_trajectories_and_compare_page(spawn, ray_local, tmp_path, shared_data):
    from raypipe.diagnostics.judge_job import JudgeConfig, run_judge
    from raypipe.core.lexicon import get_lexicon
    from raypipe.core.structure import measure_python

    summary = run_judge(JudgeConfig(input=f"{shared_data}/[rt]*/*.jsonl", output=str(tmp_path / "j"), num_cpus=2,
                                    in_process_below_mb=0))  # on Ray: compared with the in-process path below
    assert summary["rows"] == 630
    src = summary["sources"]
    assert set(src) >= {"DeepSeek-R1", "Sky-T1-math-correct-5K-27B"} and "(unreadable)" not in src
    for v in src.values():
        assert v["errors"] == 0 and v["unlabelled_rate"] == 0
        assert sum(v["label_shares"].values()) == pytest.approx(1.0)
        assert np.sum(v["transition_counts"]) == v["steps"] - v["with_steps"]
        # The keyword judge's Propose rule contains the paper markers, so it must track branch_ratio.
        assert v["propose_vs_branch_ratio"]["pearson"] > 0.5
    from raypipe.core import io

    rows = io.read_parquet_dir(str(tmp_path / "j" / "trajectories"), io.Storage()).to_pylist()
    r1 = [r for r in rows if r["source"] == "DeepSeek-R1"]
    with open(shared_data / "r1" / "deepseek-r1_aime24.jsonl") as f:
        raw = {json.loads(line)["id"]: json.loads(line)["response"] for line in f}
    for r in r1[:5]:  # the judge numbers exactly the curation job's steps
        text = raw[r["id"]]
        thinking = text[text.find("<think>") + 7: text.find("</think>")] if "</think>" in text else text[7:]
        ref = measure_python(thinking, get_lexicon("paper"))
        assert r["n_steps"] == ref["n_steps"] and r["branch_ratio"] == pytest.approx(ref["branch_ratio"])

    # a small input is judged in process (no Ray started: raypipe.executor.executor): the same rows as on Ray
    from raypipe.diagnostics.dataset import read_trajectories
    from raypipe.diagnostics.inputs import list_diagnostic_inputs
    from raypipe.executor import LocalExecutor

    ex, cfg = LocalExecutor(), JudgeConfig(input=f"{shared_data}/[rt]*/*.jsonl", output=str(tmp_path / "here"))
    here = read_trajectories(list_diagnostic_inputs(cfg.input, io.Storage()), io.Storage(), None, ex)
    ex.write_parquet(cfg.backend_class().from_config(cfg).label(here, ex), str(tmp_path / "here"), io.Storage())
    by_id = lambda t: sorted(t.to_pylist(), key=lambda r: (r["source"], r["id"]))  # noqa: E731
    assert by_id(io.read_parquet_dir(str(tmp_path / "here"), io.Storage())) == by_id(pa.Table.from_pylist(rows))

    page = tmp_path / "compare.html"
    from conftest import raypipe_cli

    res = subprocess.run(raypipe_cli() + ["diagnose", "--sources", "DeepSeek-R1,Sky-T1-math-correct-5K-27B",
                                          "--judge", str(tmp_path / "j"), "--output", str(page)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    assert "33.3 %" in html and "0.53" in html and "DeepSeek-R1" in html
    assert f"{src['DeepSeek-R1']['propose_share']:.1%}" in html
    bad = subprocess.run(raypipe_cli() + ["diagnose", "--sources", "DeepSeek-R1,nope", "--judge", str(tmp_path / "j"),
                                          "--output", str(page)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_judge_steps_come_from_the_canonical_thinking(tmp_path):
    """The same trace in three markups gets the same steps; curated rows give their `thinking` column (here an
    ablated one, shorter than the raw response), and older curated rows without it are split as curation does."""
    import pyarrow.parquet as pq

    from raypipe.core import io
    from raypipe.core.formats import FORMATS
    from raypipe.core.schema import records_table
    from raypipe.diagnostics.judge_job import JudgeConfig, run_judge

    steps = ["Let me compute 2 + 3 = 5.", "Perhaps another way: 3 + 2 = 5.", "Let me check: 5 - 3 = 2, correct.",
             "So the answer is 5.", "Alternatively, count up: 3, 4, 5."]
    thinking, final, problem = "\n\n".join(steps), "The answer is \\boxed{5}.", "What is 2 + 3?"
    inp = tmp_path / "in"
    inp.mkdir()
    flat = [{"id": "think", "problem": problem, "answer": "5", "response": f"<think>\n{thinking}\n</think>\n\n{final}"},
            {"id": "harmony", "problem": problem, "answer": "5", "response": (
                f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant<|channel|>final<|message|>"
                f"{final}<|return|>")}]
    (inp / "flat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat))
    chat = {"id": "chat", "answer": "5", "messages": [{"role": "user", "content": problem},
                                                      {"role": "assistant", "content": final,
                                                       "reasoning_content": thinking}]}
    (inp / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    rec = FORMATS.create("flat").records({**flat[0], "id": "curated"}, "s", "x", 0)[0]
    table = records_table([rec, {**rec, "id": "legacy"}])
    ablated = table.set_column(table.schema.get_field_index("thinking"), "thinking",
                               pa.array(["\n\n".join(steps[:2]), None], pa.string()))
    pq.write_table(ablated.slice(0, 1), inp / "curated.parquet")
    pq.write_table(table.slice(1, 1).drop_columns(["thinking", "final"]), inp / "legacy.parquet")

    run_judge(JudgeConfig(input=str(inp), output=str(tmp_path / "out"), num_cpus=2))
    out = {r["id"]: r for r in io.read_parquet_dir(str(tmp_path / "out" / "trajectories"), io.Storage()).to_pylist()}
    assert set(out) == {"think", "harmony", "chat", "curated", "legacy"}
    want = [KeywordJudge("paper").label(s) for s in steps]
    for name in ("think", "harmony", "chat", "legacy"):
        assert out[name]["error"] is None and out[name]["labels"] == want, name
    assert out["curated"]["labels"] == want[:2] and out["curated"]["n_steps_total"] == 2


def test_vllm_request_rows_split_and_reassemble():
    """The GPU path's pure parts (vLLM itself needs a GPU): request rows cover every step once and reassemble."""
    from raypipe.diagnostics.judge_job import JudgeConfig
    from raypipe.diagnostics.judge_vllm import assemble, to_requests

    cfg = JudgeConfig(input="x", output="y", backend="vllm", model="m", steps_per_request=2)
    steps = [f"We compute {i} + 1 = {i + 1}." for i in range(5)]
    row = {"id": "t", "source": "s", "problem_id": "p", "error": None, "problem": "Q?", "branch_ratio": None,
           "thinking": "\n\n".join(steps), "final": "\\boxed{5}"}
    reqs = to_requests(row, cfg)
    assert [(r["first"], r["count"]) for r in reqs] == [(0, 2), (2, 2), (4, 1)]
    answers = []
    for r in reversed(reqs):  # answers come back in any order
        items = [{"step": k, "label": expected_label(k)} for k in range(r["first"] + 1, r["first"] + r["count"] + 1)]
        answers.append({**r, "answer": json.dumps({"labels": items}), "answer_error": None})
    answers[0]["answer"], answers[0]["answer_error"] = None, "engine error"
    out = assemble(answers, cfg)
    assert out["labels"] == [expected_label(k) for k in range(1, 5)] + [UNLABELLED]
    assert out["n_requests"] == 3 and out["n_failed_requests"] == 1 and out["request_errors"] == ["engine error"]
    empty = to_requests({**row, "thinking": ""}, cfg)
    assert [r["count"] for r in empty] == [0]
    assert assemble([{**empty[0], "answer": None, "answer_error": None}], cfg)["labels"] == []


@pytest.mark.parametrize("job", ["jobs/judge.py", "jobs/loss_probe.py"])
def test_job_entrypoints_parse_their_flags(spawn, job):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / job), "--help"], capture_output=True, text=True, timeout=120,
                         cwd="/")
    assert res.returncode == 0 and "--input" in res.stdout and "--output" in res.stdout
