"""The online scorer on a real Ray Serve instance on 127.0.0.1, against a real curation run of the shared data."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import R1, TRAJECTORIES, free_port, need_shared_data

pytestmark = pytest.mark.timeout(300)

TOKEN = "test-token-3f9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = r"9^{9^{9^{9^{9^{9}}}}}"  # sympy would evaluate this tower for ever: only the wall-clock bound ends it
STRICT = dict(max_item_bytes=64 << 10, max_batch_items=4, max_batch_bytes=256 << 10, max_ongoing_requests=1,
              max_queued_requests=1, batch_size=1, retry_after_s=2, replica_cpus=0.25)


def input_files() -> list[Path]:
    return sorted(TRAJECTORIES.glob("*.jsonl")) + sorted(R1.glob("*.jsonl"))


def raw_rows() -> list[dict]:
    return [json.loads(line) for f in input_files() for line in f.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def curated_run(ray_local, tmp_path_factory) -> Path:
    """The batch job, in-process, on every real trajectory (Sky-T1 and DeepSeek-R1)."""
    need_shared_data()
    from raypipe.config import CurateConfig
    from raypipe.pipeline import run_curate

    root = tmp_path_factory.mktemp("serve-curate")
    inputs = root / "input"
    inputs.mkdir()
    for f in input_files():
        (inputs / f.name).symlink_to(f)
    manifest = run_curate(CurateConfig(input=str(inputs), output=str(root / "run"), num_cpus=2))
    assert manifest["balanced"] and manifest["counts"]["input"] == len(raw_rows())
    return root / "run"


@pytest.fixture(scope="module")
def servers(ray_local, curated_run, tmp_path_factory):
    """Two applications on one Serve proxy: `main` (bearer token) and `strict` (tight limits, 1 s verify bound)."""
    from ray import serve

    from raypipe.online_serve import ServeSettings, build_app

    manifest = json.loads((curated_run / "manifest.json").read_text())
    manifest["config"]["verify_timeout_s"] = 1.0
    strict_manifest = tmp_path_factory.mktemp("strict") / "manifest.json"
    strict_manifest.write_text(json.dumps(manifest))

    port = free_port()
    serve.shutdown()  # a Serve left by another module would keep its own HTTP port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(ServeSettings(manifest=str(curated_run)), api_token=TOKEN), name="main", route_prefix="/")
    serve.run(build_app(ServeSettings(manifest=str(strict_manifest), **STRICT), api_token=""), name="strict",
              route_prefix="/strict")
    base = f"http://127.0.0.1:{port}"
    yield {"main": base, "strict": base + "/strict", "run": curated_run}
    serve.shutdown()  # the next module may start Serve with other HTTP options


def batch_decisions(run: Path) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for part in ("curated", "dropped"):
        for f in sorted((run / part).glob("*.parquet")):
            t = pq.read_table(f, columns=["source", "id", "decision", "verdict", "branch_score", "n_steps", "threshold"])
            for row in t.to_pylist():
                out[(row["source"], row["id"])] = row
    return out


def test_online_decisions_equal_the_batch_jobs_on_every_real_trajectory(servers):
    import httpx

    batch = batch_decisions(servers["run"])
    rows = raw_rows()
    assert len(batch) == len(rows)

    with httpx.Client(headers=AUTH, timeout=120) as client:
        def post(row):
            return client.post(servers["main"] + "/v1/score", json=row)

        with ThreadPoolExecutor(8) as pool:  # concurrent singles: @serve.batch scores them together
            singles = list(pool.map(post, rows))
        batched = []
        for i in range(0, len(rows), 64):
            r = client.post(servers["main"] + "/v1/score/batch", json={"items": rows[i:i + 64]})
            assert r.status_code == 200, r.text[:300]
            batched += r.json()["results"]

    assert [r.status_code for r in singles] == [200] * len(rows)
    mismatches = []
    for row, single, from_batch_route in zip(rows, (r.json() for r in singles), batched):
        want = batch[(single["source"], single["id"])]
        assert single["id"] == row["id"]
        for got in (single, from_batch_route):
            for k in ("decision", "verdict", "n_steps", "branch_score", "threshold"):
                if got[k] != want[k]:
                    mismatches.append((row["id"], single["source"], k, got[k], want[k]))
    assert not mismatches, mismatches[:10]
    decisions = {r.json()["decision"] for r in singles}
    assert decisions == {"keep", "drop"}  # both outcomes occur, so equality means something


def test_bearer_token_is_required_on_the_api_but_not_on_health(servers):
    import httpx

    url = servers["main"]
    body = {"problem": "1+1?", "response": "<think>2</think> \\boxed{2}", "reference_answer": "2"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(url + "/v1/score", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert httpx.post(url + "/v1/score/batch", json={"items": [body]}, headers=headers).status_code == 401
        assert httpx.get(url + "/v1/config", headers=headers).status_code == 401
    assert httpx.post(url + "/v1/score", json=body, headers=AUTH).json()["decision"] in ("keep", "drop")
    assert httpx.get(url + "/healthz").json()["status"] == "ok"
    assert httpx.get(servers["strict"] + "/v1/config").status_code == 200  # no token configured: open


def test_malformed_or_mistyped_bodies_get_422_naming_the_field(servers):
    import httpx

    url, h = servers["main"], {**AUTH, "content-type": "application/json"}
    r = httpx.post(url + "/v1/score", content=b'{"problem": "x", "response": ', headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    for body in (b'{"problem": "\xff\xfe", "response": "x"}', b"[" * 200_000):  # not UTF-8; nested too deep
        r = httpx.post(url + "/v1/score", content=body, headers=h)
        assert r.status_code == 422 and r.json()["fields"] == ["body"], r.text
    r = httpx.post(url + "/v1/score", json={"problem": "x", "response": 5}, headers=AUTH)
    assert r.status_code == 422 and r.json()["fields"] == ["body.response"], r.text
    r = httpx.post(url + "/v1/score", json={"response": "x"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["fields"] == ["body.problem"]
    r = httpx.post(url + "/v1/score/batch", json={"items": [{"problem": "a", "response": "b"}, {"problem": ["a"]}]},
                   headers=AUTH)
    assert r.status_code == 422 and "body.items.1.problem" in r.json()["fields"]
    assert "input" not in json.dumps(r.json()["detail"])  # the offending input is not echoed back

    # Valid JSON and types, but a record the batch job would reject too: 422 alone, a per-item reject in a batch.
    bad = [{"problem": "p", "response": "r", "ground_truth": ["a list"]},
           b'{"problem": "\\ud800", "response": "lone surrogate"}']
    r = httpx.post(url + "/v1/score", json=bad[0], headers=AUTH)
    assert r.status_code == 422 and "ground_truth" in r.json()["error"]
    r = httpx.post(url + "/v1/score", content=bad[1], headers=h)
    assert r.status_code == 422 and "surrogate" in r.json()["error"]
    good = {"problem": "1+1?", "response": "<think>\nPerhaps 2.\n</think>\n\\boxed{2}", "reference_answer": "2"}
    items = b'{"items": [%s, %s, %s]}' % (json.dumps(good).encode(), json.dumps(bad[0]).encode(), bad[1])
    r = httpx.post(url + "/v1/score/batch", content=items, headers=h)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["decision"] for x in results[1:]] == ["reject", "reject"] and results[0]["verdict"] == "correct"
    assert r.json()["counts"]["reject"] == 2


def test_bodies_and_batches_over_the_limits_get_413(servers):
    import httpx

    url = servers["strict"]
    small = {"problem": "p", "response": "<think>\nx\n</think>\n\\boxed{1}", "reference_answer": "1"}
    assert httpx.post(url + "/v1/score", json={**small, "response": "y" * (60 << 10)}).status_code == 200
    r = httpx.post(url + "/v1/score", json={**small, "response": "y" * (70 << 10)})
    assert r.status_code == 413 and r.json()["limit_bytes"] == 64 << 10

    def chunked():  # no Content-Length: the limit is enforced while reading
        for _ in range(80):
            yield b" " * 1024

    r = httpx.post(url + "/v1/score", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert httpx.post(url + "/v1/score/batch", json={"items": [small] * 4}).status_code == 200
    r = httpx.post(url + "/v1/score/batch", json={"items": [small] * 5})
    assert r.status_code == 413 and "limit of 4" in r.json()["detail"]


def test_hostile_latex_is_bounded_and_overload_gets_503_with_retry_after(servers):
    import httpx

    url = servers["strict"]

    def hostile(i: int) -> dict:
        return {"id": f"h{i}", "problem": "p", "reference_answer": "7",
                "response": f"<think>\nhmm\n</think>\nThe answer is $\\boxed{{{HOSTILE}+{i}}}$."}

    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/score", json=hostile(0), timeout=30)
    took = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["verdict"] == "timeout", r.text
    assert r.json()["decision"] == "drop" and r.json()["reason"] == "verdict:timeout"
    assert took < 1.0 + 4.0  # the 1 s bound from the manifest, plus HTTP and a worker restart

    # One request in the replica and one queued at the proxy: the rest of a burst are turned away.
    with ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(lambda i: httpx.post(url + "/v1/score", json=hostile(i), timeout=60), range(1, 9)))
    codes = sorted(r.status_code for r in burst)
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
    assert all(r.headers.get("retry-after") == "2" for r in burst if r.status_code == 503)
    assert all(r.json()["verdict"] == "timeout" for r in burst if r.status_code == 200)
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # the replica is not wedged


def test_config_reports_the_manifest_thresholds_and_versions(servers):
    import httpx

    cfg = httpx.get(servers["main"] + "/v1/config", headers=AUTH).json()
    manifest = json.loads((servers["run"] / "manifest.json").read_text())
    policy = manifest["policy"]
    assert cfg["manifest"] == str(servers["run"] / "manifest.json")
    assert cfg["config_hash"] == manifest["config_hash"]
    assert cfg["lexicon"] == manifest["config"]["lexicon"] and cfg["proxy"] == policy["proxy"]
    assert cfg["thresholds"] == {s: (t["score"] if t else None) for s, t in policy["thresholds"].items()}
    assert cfg["default_threshold"] == policy["default_threshold"]
    assert cfg["manifest_versions"] == manifest["versions"] and cfg["versions"]["verifier"]
    assert cfg["auth"] is True
    unknown = {"source": "never-seen", "problem": "1+1?", "reference_answer": "2",
               "response": "<think>\nPerhaps 2.\n\nOr 2.\n</think>\n\\boxed{2}"}
    r = httpx.post(servers["main"] + "/v1/score", json=unknown, headers=AUTH).json()
    assert r["known_source"] is False and r["threshold"] == policy["default_threshold"]
    assert r["branch_score"] == 0.5 and r["decision"] == "drop" and "all sources" in r["reason"]
    paths = httpx.get(servers["main"] + "/openapi.json").json()["paths"]
    assert {"/v1/score", "/v1/score/batch", "/v1/config", "/healthz"} <= set(paths)


def test_schemathesis_finds_no_server_error(servers):
    """Property-based requests generated from the app's own OpenAPI schema (schemathesis CLI)."""
    st = Path(sys.executable).with_name("st")
    checks = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
    cmd = [str(st), "run", servers["main"] + "/openapi.json", "--checks", checks,
           "--max-examples", "40", "--seed", "3", "-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", "30",
           "--no-color"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "No issues found" in out and " generated, " in out, out[-2000:]


@pytest.mark.slow
def test_sixty_seconds_at_100_requests_per_second_has_no_server_error(servers):
    """A bounded open loop: 6000 POSTs of real 20-80 KB trajectories at 100/s, then it stops by itself."""
    from raypipe.loadgen import fixed_rate

    bodies = [json.dumps(r).encode() for r in raw_rows() if 20_000 <= len(json.dumps(r).encode()) <= 80_000]
    assert len(bodies) >= 10
    result = fixed_rate(servers["main"] + "/v1/score", bodies, rate=100, seconds=60, headers=AUTH, timeout_s=30)
    print("load:", result.summary())
    # Every scheduled request is accounted for: sent and answered, or skipped by the client's in-flight bound
    # (that happens only when the shared machine falls far behind; the summary printed above says how often).
    assert result.sent + result.skipped == 6000 and result.sent >= 3000, result.summary()
    assert result.server_errors == 0 and not result.errors, result.summary()
    assert result.answered == result.sent and result.statuses[200] == result.sent, result.summary()


def test_raypipe_serve_command_reads_an_s3_manifest_and_stops_on_sigterm(curated_run, s3_bucket, tmp_path):
    """The CLI end to end, in its own process and its own local Ray: manifest on S3 (moto), token from the env."""
    import os
    import signal

    import boto3
    import httpx

    from conftest import raypipe_cli

    endpoint, bucket = s3_bucket
    boto3.client("s3", endpoint_url=endpoint).put_object(
        Bucket=bucket, Key="run/manifest.json", Body=(curated_run / "manifest.json").read_bytes())
    port = free_port()
    env = {**os.environ, "RAYPIPE_API_TOKEN": "cli-token"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*raypipe_cli(), "serve", "--manifest", f"s3://{bucket}/run/manifest.json",
                             "--s3-endpoint", endpoint, "--port", str(port), "--num-cpus", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        row = raw_rows()[0]
        assert httpx.post(base + "/v1/score", json=row).status_code == 401
        r = httpx.post(base + "/v1/score", json=row, headers={"Authorization": "Bearer cli-token"}, timeout=60)
        want = batch_decisions(curated_run)[(row["model"], row["id"])]["decision"]
        assert r.status_code == 200 and r.json()["decision"] == want
        cfg = httpx.get(base + "/v1/config", headers={"Authorization": "Bearer cli-token"}).json()
        assert cfg["manifest"] == f"s3://{bucket}/run/manifest.json"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_serve_config_yaml_is_a_valid_deploy_config_for_this_app():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from raypipe.online_serve import DEPLOYMENT_NAME, ServeSettings

    root = Path(__file__).resolve().parents[1]
    config = ServeDeploySchema.model_validate(yaml.safe_load((root / "serve" / "config.yaml").read_text()))
    app = config.applications[0]
    assert app.import_path == "serve.scorer:app"
    ServeSettings(**app.args)  # every arg is a known setting
    deployment = app.deployments[0]
    assert deployment.name == DEPLOYMENT_NAME and deployment.num_replicas >= 1 and deployment.max_ongoing_requests
    proc = subprocess.run([sys.executable, "-c", "import serve.scorer as s; assert callable(s.app)"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
