"""End to end: `raypipe eval` with the hf backend on a tiny model, and the openai backend against the CPU model
deployment on Ray Serve (127.0.0.1), interrupted and resumed; then `raypipe eval compare`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from raypipe.eval.backends.openai import OpenAIBackend
from raypipe.eval.config import EvalConfig
from raypipe.eval.runner import run_eval
from tests.conftest import BENCHMARKS, free_port, raypipe_cli

pytestmark = pytest.mark.timeout(420)
SLICE = ["--benchmarks", "math500", "--limit", "5", "--n", "2", "--max-tokens", "24", "--seed", "1"]


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*raypipe_cli(), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def hf_run(spawn, tiny_model_path, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-hf")
    p = cli("eval", "--model", tiny_model_path, "--backend", "hf", "--output", str(out), "--data-dir", str(BENCHMARKS),
            *SLICE)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_hf_end_to_end_results_complete_and_stamped(hf_run, tiny_model_path):
    r = json.loads((hf_run / "results.json").read_text())
    m = r["metrics"]["math500"]
    assert m["problems"] == 5 and m["n"] == 2 and m["samples"] == 10
    assert set(m["pass@k"]) == {"1", "2"} and 0.0 <= m["avg@n"] <= 1.0
    assert r["metrics"]["overall"]["avg@n"] == m["avg@n"]
    assert len(r["samples"]) == 10 and len({s["key"] for s in r["samples"]}) == 10
    for s in r["samples"]:
        assert s["verdict"] in ("correct", "wrong", "no_answer", "error", "timeout", "unparseable_reference")
        assert s["finish_reason"] in ("stop", "length") and s["completion_tokens"] <= 24 + 1
        assert s["n_steps"] is not None and s["generation_error"] is None
    assert len({s["response"] for s in r["samples"]}) > 1  # sampled, not one output repeated
    st = r["stamp"]
    assert st["model"]["path"] == tiny_model_path and len(st["model"]["sha256"]) == 64
    assert st["engine"]["engine"] == "transformers" and st["engine"]["version"]
    assert st["sampling"] == {"n": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 24, "seed": 1}
    assert st["prompt_template"]["version"] == "v1" and "\\boxed{}" in st["prompt_template"]["text"]
    assert st["verifier"]["version"] and st["verifier"]["math-verify"]
    assert len(st["datasets"]["math500"]["sha256"]) == 64 and st["datasets"]["math500"]["problems"] == 5
    assert "<table>" in (hf_run / "report.html").read_text()
    # A rerun into the same folder resumes: nothing left to generate.
    p = cli("eval", "--model", tiny_model_path, "--backend", "hf", "--output", str(hf_run), "--data-dir",
            str(BENCHMARKS), *SLICE)
    assert p.returncode == 0, p.stderr[-2000:]
    r2 = json.loads((hf_run / "results.json").read_text())
    assert r2["run"]["generated_this_run"] == 0 and r2["run"]["resumed_samples"] == 10
    assert [s["response"] for s in r2["samples"]] == [s["response"] for s in r["samples"]]
    # Other sampling settings into the same folder are refused.
    p = cli("eval", "--model", tiny_model_path, "--backend", "hf", "--output", str(hf_run), "--data-dir",
            str(BENCHMARKS), *SLICE, "--temperature", "0")
    assert p.returncode == 2 and "other settings" in p.stderr


def test_cli_errors_are_clear(spawn, shared_data, tmp_path):
    p = cli("eval", "--model", "tiny", "--benchmarks", "aime26", "--output", str(tmp_path))
    assert p.returncode == 2 and "unknown benchmark 'aime26'" in p.stderr
    p = cli("eval", "--model", "tiny", "--benchmarks", "beyond_aime", "--output", str(tmp_path), "--data-dir",
            str(BENCHMARKS))
    assert p.returncode == 2 and "beyond_aime.jsonl" in p.stderr
    p = subprocess.run([sys.executable, "jobs/evaluate.py", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--benchmarks" in p.stdout


class Interrupted(Exception):
    pass


class StopAfterFirstChunk(OpenAIBackend):
    """The real backend, interrupted (as by a crash) once its first chunk is saved."""

    calls = 0

    def generate(self, requests, sampling):
        StopAfterFirstChunk.calls += 1
        if StopAfterFirstChunk.calls == 2:
            raise Interrupted()
        return super().generate(requests, sampling)


@pytest.fixture(scope="module")
def served_tiny(ray_local, tiny_model_path):
    from ray import serve

    from raypipe.eval import hosting

    serve.shutdown()
    url = hosting.start(hosting.cpu_app(tiny_model_path, name="tiny"), name="eval-test-models",
                        port=free_port(), route_prefix="/eval-models")
    yield url
    serve.shutdown()  # Serve keeps its first HTTP options: the next module starts it afresh with its own


def test_openai_against_serve_cpu_deployment_resumes(served_tiny, hf_run, shared_data, tmp_path):
    import httpx

    models = httpx.get(served_tiny + "/models", timeout=30).json()["data"]
    assert models[0]["id"] == "tiny" and len(models[0]["raypipe_sha256"]) == 64
    r = httpx.post(served_tiny + "/completions", json={"prompt": "1+1=", "max_tokens": 4}, timeout=60).json()
    assert r["object"] == "text_completion" and r["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.post(served_tiny + "/chat/completions", json={"messages": []}, timeout=30).status_code == 422

    out = tmp_path / "eval-openai"
    config = EvalConfig(model=served_tiny, backend="openai", benchmarks=["math500"], limit=5, n=2, max_tokens=24,
                        seed=1, data_dir=str(BENCHMARKS), output=str(out), chunk_size=4, concurrency=2)
    with pytest.raises(Interrupted):
        run_eval(config, backend=StopAfterFirstChunk(served_tiny, concurrency=2), log=lambda *_: None)
    assert len(list((out / "samples").glob("part-*.jsonl"))) == 1
    p = cli("eval", "--model", served_tiny, "--backend", "openai", "--output", str(out), "--data-dir",
            str(BENCHMARKS), "--chunk-size", "4", "--concurrency", "2", *SLICE)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    hf = json.loads((hf_run / "results.json").read_text())
    assert r["run"]["resumed_samples"] == 4 and r["run"]["generated_this_run"] == 6
    assert r["metrics"]["math500"]["samples"] == hf["metrics"]["math500"]["samples"] == 10
    assert sorted(s["key"] for s in r["samples"]) == sorted(s["key"] for s in hf["samples"])
    assert all(s["generation_error"] is None and s["verdict"] for s in r["samples"])
    assert r["stamp"]["engine"]["served_model"] == "tiny"
    assert r["stamp"]["model"]["sha256"] == hf["stamp"]["model"]["sha256"]

    p = cli("eval", "compare", str(hf_run), str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "MATH500" in lines[1] and "Avg." in lines[1]
    assert lines[2].startswith(hf_run.name) and lines[-1].startswith("Δ")


def test_openai_unreachable_server_is_a_clear_error(spawn, shared_data, tmp_path):
    p = cli("eval", "--model", f"http://127.0.0.1:{free_port()}/v1", "--backend", "openai", "--retries", "1",
            "--output", str(tmp_path), "--data-dir", str(BENCHMARKS), *SLICE, timeout=120)
    assert p.returncode == 2 and "ConnectError" in p.stderr
