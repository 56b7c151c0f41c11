"""raypipe generate: the incremental scorer equals the finished text's on every real trace; the abort rules; the
replay backend gives the curate job's decisions; a streamed run against an OpenAI-compatible server that replays real
traces stops branch-heavy ones and accounts for them; quotas; a killed run resumes; the scorer as a service."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import R1, ROOT, TRAJECTORIES, need_shared_data, raypipe_cli, run_cli

from raypipe.core.formats import normalize_row
from raypipe.core.lexicon import get_lexicon
from raypipe.core.structure import measure_python
from raypipe.generate.abort import AbortRule
from raypipe.generate.stream import StreamScorer


def real_rows() -> list[dict]:
    need_shared_data()
    files = sorted(TRAJECTORIES.glob("*.jsonl")) + [R1 / "deepseek-r1_aime24.jsonl"]
    # _line: the row's line in its file, from 1, as the curation job numbers rows
    return [dict(json.loads(line), _file=str(f), _line=n) for f in files for n, line in enumerate(open(f), start=1)]


def test_incremental_scoring_equals_the_finished_text_on_every_real_trace():
    lexicon = get_lexicon("paper")
    rows = real_rows()
    assert len(rows) == 630
    for i, row in enumerate(rows):
        record = normalize_row({k: v for k, v in row.items() if k not in ("_file", "_line")}, "flat", "src",
                               row["_file"], row["_line"])
        want = measure_python(record["thinking"], lexicon)
        scorer, text, rng, pos = StreamScorer(lexicon), row["response"], random.Random(i), 0
        seen = []
        while pos < len(text):
            step = rng.choice((1, 3, 7, 40, 200))
            seen.append(scorer.feed(text[pos:pos + step]).n_markers)
            pos += step
        got = scorer.finish()
        assert (got.n_steps, got.n_branch_steps, got.n_markers) == (
            want["n_steps"], want["n_branch_steps"], want["n_markers"]), (row["_file"], row["_line"])
        assert seen == sorted(seen) and (not seen or seen[-1] <= got.n_markers), "running counts never overshoot"
        assert got.thought_complete == (record["markup"] != "plain" and bool(record["final"]) or
                                        record["markup"] == "think" and "</think>" in text)


def test_reasoning_deltas_and_a_tag_split_across_chunks():
    lexicon = get_lexicon("paper")
    thinking = "Perhaps x.\n\nAlternatively y.\n\nSo 4."
    parts = StreamScorer(lexicon, reasoning=True)
    for ch in thinking:
        parts.feed(ch)
    assert (parts.finish().n_steps, parts.state().n_branch_steps) == (3, 2)
    raw = StreamScorer(lexicon)
    for piece in ("<th", "ink>\nPerhaps x.\n", "\nAnother y.\n\nok</th", "ink>\\boxed{4}"):
        raw.feed(piece)
    state = raw.finish()
    assert (state.n_steps, state.n_branch_steps, state.thought_complete) == (3, 2, True)


def test_abort_rules_parse_and_fire():
    lexicon = get_lexicon("paper")
    s = StreamScorer(lexicon)
    for _ in range(3):
        s.feed("Perhaps a.\n\n")
    assert AbortRule.parse("branch_steps>=3").check(s.state()) == "aborted: branch_steps>=3"
    assert AbortRule.parse("markers>=4").check(s.state()) is None
    ratio = AbortRule.parse("branch_ratio>=threshold after 2 steps")
    assert ratio.needs_threshold and ratio.check(s.state(), 0.5) and ratio.check(s.state(), None) is None
    assert AbortRule.parse("branch_ratio>=0.9 after 5 steps").check(s.state()) is None
    for bad in ("markers>21", "steps>=threshold", "nope>=3"):
        with pytest.raises(ValueError):
            AbortRule.parse(bad)


def generate(capsys, out: Path, *args: str) -> str:
    return run_cli(capsys, "generate", "--output", out, "--num-cpus", "2", *args)


def decisions(out: Path) -> dict[tuple[str, str], tuple[str, str]]:
    rows = [r for part in ("curated", "dropped") for f in sorted((out / part).glob("*.parquet"))
            for r in pq.read_table(f, columns=["problem", "response", "decision", "reason"]).to_pylist()]
    return {(r["problem"], r["response"]): (r["decision"], r["reason"]) for r in rows}


def r1_rows() -> list[dict]:
    need_shared_data()
    return [json.loads(line) for line in open(R1 / "deepseek-r1_aime24.jsonl")]


def test_replay_without_a_budget_gives_the_curate_jobs_output(capsys, tmp_path):
    r1 = str(R1 / "deepseek-r1_aime24.jsonl")
    printed = generate(capsys, tmp_path / "gen", "--input", r1, "--backend", "replay", "--responses", r1, "--model",
                       "r1", "--abort-when", "none", "--answer-from", "final-or-thinking")
    assert "30 finished, 0 aborted" in printed
    run_cli(capsys, "curate", "--input", r1, "--output", tmp_path / "cur", "--num-cpus", "2",
            "--answer-from", "final-or-thinking")
    gen, cur = decisions(tmp_path / "gen"), decisions(tmp_path / "cur")
    assert gen == cur and len(gen) == 30
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("gen", "cur"))
    assert a["counts"] == b["counts"] and a["policy"]["thresholds"].keys() == {"r1"}
    assert [t["score"] for t in a["policy"]["thresholds"].values()] == \
        [t["score"] for t in b["policy"]["thresholds"].values()]
    g = a["generation"]
    assert g["traces"] == {"finished": 30, "aborted": 0, "errors": 0} and g["tokens"]["completion"] > 100_000
    assert g["kept"] == b["counts"]["kept"] == 18


@pytest.fixture
def replay_server():
    from raypipe.eval.replay_server import replay_app, serve_in_thread

    def start(rows: list[dict], rate: float = 4000.0):
        return serve_in_thread(replay_app(rows, tokens_per_s=rate))
    return start


def stats(url: str) -> dict:
    import httpx

    return httpx.get(url[: -len("/v1")] + "/stats").json()


def test_a_streamed_run_stops_branch_heavy_traces_and_accounts_for_them(ray_local, capsys, tmp_path, replay_server):
    rows = r1_rows()
    out = tmp_path / "gen"
    with replay_server(rows, rate=3000) as url:
        generate(capsys, out, "--input", str(R1 / "deepseek-r1_aime24.jsonl"), "--backend", "openai", "--model", url,
                 "--abort-when", "markers>=21", "--answer-from", "final-or-thinking", "--concurrency", "8")
        time.sleep(1)
        served = stats(url)
    g = json.loads((out / "manifest.json").read_text())["generation"]
    aborted = [json.loads(line) for f in (out / "generation" / "aborted").glob("*.jsonl") for line in open(f)]
    finished = [json.loads(line) for f in (out / "generation" / "traces").glob("*.jsonl") for line in open(f)]
    assert g["traces"]["aborted"] == len(aborted) > 0 and g["traces"]["finished"] == len(finished)
    assert len(aborted) + len(finished) == 30 == served["requests"]
    assert {a["reason"] for a in aborted} == {"aborted: markers>=21"} and g["aborted_by_reason"] == {
        "aborted: markers>=21": len(aborted)}
    assert all(a["n_markers"] >= 21 and a["completion_tokens"] > 0 for a in aborted)
    by_problem = {r["problem"]: r["response"] for r in rows}
    assert all(by_problem[a["problem"]].startswith(a["response"]) and len(a["response"]) < len(by_problem[a["problem"]])
               for a in aborted), "a stopped trace is the start of the teacher's trace"
    assert all(f["response"] == by_problem[f["problem"]] for f in finished)
    assert g["tokens"]["aborted"] == sum(a["completion_tokens"] for a in aborted)
    assert served["stopped_by_client"] > 0, "the server stopped writing the traces the client gave up"
    assert served["streamed_tokens"] < sum(len(r["response"]) for r in rows) / 4
    assert json.loads((out / "manifest.json").read_text())["counts"]["records"] == len(finished)


def test_quotas_stop_sampling_a_problem_once_it_has_its_kept_traces(ray_local, capsys, tmp_path, replay_server):
    need_shared_data()
    rows = r1_rows() + [json.loads(line) for name in ("skyt1_math-correct-5K-14B_aime24.jsonl",
                                                     "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl")
                        for line in open(TRAJECTORIES / name)]
    out = tmp_path / "gen"
    with replay_server(rows, rate=50_000) as url:
        generate(capsys, out, "--input", str(R1 / "deepseek-r1_aime24.jsonl"), "--backend", "openai", "--model", url,
                 "--abort-when", "none", "--answer-from", "final-or-thinking", "--keep-per-problem", "1",
                 "--max-samples", "3", "--rule", "keep-all")
        served = stats(url)
    units = [json.loads(p.read_text()) for p in (out / "generation" / "units").glob("*.json")]
    by_problem: dict[str, list[dict]] = {}
    for u in units:
        by_problem.setdefault(u["problem_id"], []).append(u)
    short = 0
    for pid, us in by_problem.items():
        us.sort(key=lambda u: u["sample"])
        kept = [u["sample"] for u in us if u["verdict"] == "correct" and u["decision"] == "keep"]
        if kept:
            assert len(us) == kept[0] + 1, (pid, [u["sample"] for u in us], kept)  # no sample after the quota
        else:
            short += 1
            assert len(us) == 3
    q = json.loads((out / "manifest.json").read_text())["generation"]["quota"]
    assert q["short_count"] == short and q["fulfilled"] == 30 - short and served["requests"] == len(units)
    assert 30 < len(units) < 90, "some problems needed more samples, none more than the maximum"


def test_a_killed_run_resumes_without_generating_finished_units_again(spawn, ray_local, capsys, tmp_path,
                                                                    replay_server):
    rows = r1_rows()
    out = tmp_path / "gen"
    args = ["--input", str(R1 / "deepseek-r1_aime24.jsonl"), "--backend", "openai", "--abort-when", "none",
            "--answer-from", "final-or-thinking", "--concurrency", "2"]
    with replay_server(rows, rate=1500) as url:
        proc = subprocess.Popen([*raypipe_cli(), "generate", "--model", url, "--output", str(out), "--num-cpus", "2",
                                 *args], cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        units = out / "generation" / "units"
        deadline = time.time() + 300
        while len(list(units.glob("*.json"))) < 4:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    before = {p.name: p.read_text() for p in units.glob("*.json")}
    assert 4 <= len(before) < 30
    with replay_server(rows, rate=50_000) as url:
        generate(capsys, out, "--model", url, *args)
        served = stats(url)
    assert served["requests"] == 30 - len(before)
    assert all((units / name).read_text() == text for name, text in before.items())
    assert json.loads((out / "manifest.json").read_text())["generation"]["units"] == 30
