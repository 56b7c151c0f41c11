"""The online scorer on a real Ray Serve instance on 127.0.0.1, against a real curation run of the shared data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import R1, TRAJECTORIES, free_port, need_shared_data, raypipe_cli, run_cli

pytestmark = pytest.mark.timeout(300)

TOKEN = "test-token-3f9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = r"9^{9^{9^{9^{9^{9}}}}}"  # sympy would evaluate this tower for ever: only the wall-clock bound ends it
STRICT = dict(max_item_bytes=64 << 10, max_batch_items=4, max_batch_bytes=256 << 10, max_ongoing_requests=1,
              max_queued_requests=1, batch_size=1, retry_after=2, replica_cpus=0.25)


def input_files() -> list[Path]:
    return sorted(TRAJECTORIES.glob("*.jsonl")) + sorted(R1.glob("*.jsonl"))


def raw_rows() -> list[dict]:
    return [json.loads(line) for f in input_files() for line in f.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def curated_run(tmp_path_factory) -> Path:
    """The batch job, in-process, on every real trajectory (Sky-T1 and DeepSeek-R1)."""
    need_shared_data()
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    root = tmp_path_factory.mktemp("serve-curate")
    inputs = root / "input"
    inputs.mkdir()
    for f in input_files():
        (inputs / f.name).symlink_to(f)
    manifest = run_curate(CurateConfig(input=str(inputs), output=str(root / "run"), num_cpus=2))
    assert manifest["balanced"] and manifest["counts"]["records"] == len(raw_rows())
    return root / "run"


class ServeProcess:
    """`raypipe serve` in its own process and its own local Ray: the command's real default configuration."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen([*raypipe_cli(), "serve", "--port", str(self.port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.name = name

    def wait_ready(self, timeout_s: float = 180) -> None:
        import httpx

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert self.proc.poll() is None, f"{self.name}: " + self.log_path.read_text()[-3000:]
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready: " + self.log_path.read_text()[-3000:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def servers(spawn, curated_run, s3_server, tmp_path_factory):
    """Two `raypipe serve` processes with default settings but for what each test needs: `main` reads its manifest
    from S3 (moto), takes its bearer token from the environment and exports metrics; `strict` has tight limits
    and a 1 s verify bound."""
    import boto3

    manifest = json.loads((curated_run / "manifest.json").read_text())
    manifest["config"]["verify_timeout_s"] = 1.0
    root = tmp_path_factory.mktemp("servers")
    (root / "strict.json").write_text(json.dumps(manifest))
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="serve-manifests")
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket="serve-manifests", Key="run/manifest.json", Body=(curated_run / "manifest.json").read_bytes())
    metrics_port, strict_metrics_port = free_port(), free_port()
    env = {**os.environ, "RAY_metrics_report_interval_ms": "1000"}
    main = ServeProcess("main", ["--manifest", "s3://serve-manifests/run/manifest.json", "--s3-endpoint", s3_server,
                                 "--metrics-export-port", str(metrics_port), "--num-cpus", "2"],
                        root / "main.log", {**env, "RAYPIPE_API_TOKEN": TOKEN})
    strict = ServeProcess("strict", ["--manifest", str(root / "strict.json"), "--num-cpus", "1",
                                     "--metrics-export-port", str(strict_metrics_port),
                                     *(f"--{k.replace('_', '-')}={v}" for k, v in STRICT.items())],
                          root / "strict.log", {k: v for k, v in env.items() if k not in (
                              # as a user's shell has it: raypipe sets what its own local Ray needs
                              "RAYPIPE_API_TOKEN", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")})
    try:
        main.wait_ready()
        strict.wait_ready()
        yield {"main": main.base, "strict": strict.base, "run": curated_run, "main_process": main,
               "manifest_uri": "s3://serve-manifests/run/manifest.json", "metrics": f"http://127.0.0.1:{metrics_port}",
               "strict_metrics": f"http://127.0.0.1:{strict_metrics_port}",
               "logs": root}
    finally:
        main.stop()
        strict.stop()


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


def test_online_scorer_reads_the_canonical_parts_whatever_the_markup(curated_run):
    """A trajectory sent as one response in <think> markup and the same one as reasoning_content beside its final
    part score alike: the endpoint reads the canonical reasoning and final part, as the batch job does."""
    from raypipe.core.schema import split_reasoning
    from raypipe.online.scorer import OnlineScorer, load_run

    scorer = OnlineScorer(load_run(str(curated_run / "manifest.json"))).setup()
    try:
        rows = [r for r in raw_rows() if split_reasoning(r["response"]).final.strip()][:20]
        assert len(rows) == 20
        as_fields = []
        for r in rows:
            split = split_reasoning(r["response"])
            as_fields.append({**r, "response": split.final, "reasoning_content": split.thinking})
        keys = ("id", "verdict", "answer_extracted", "n_steps", "branch_score", "decision")
        want = [{k: x[k] for k in keys} for x in scorer.score_rows(rows)]
        assert [{k: x[k] for k in keys} for x in scorer.score_rows(as_fields)] == want
        assert {x["verdict"] for x in want} != {None} and any(x["n_steps"] > 1 for x in want)
        lone = scorer.score_rows([{**as_fields[0], "reasoning_content": "\ud800 x"}])
        assert lone[0]["decision"] == "reject" and "surrogate" in lone[0]["error"]
    finally:
        scorer.close()


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
    r = httpx.post(url + "/v1/score/batch", json={"items": {"problem": "a"}}, headers=AUTH)  # no list of items
    assert r.status_code == 422 and "body.items" in r.json()["fields"]
    assert "input" not in json.dumps(r.json()["detail"])  # the offending input is not echoed back
    # A batch answers per item, as the README says: a mistyped or incomplete item is a reject naming its field.
    good = {"problem": "1+1?", "response": "<think>\nPerhaps 2.\n</think>\n\\boxed{2}", "reference_answer": "2"}
    r = httpx.post(url + "/v1/score/batch", json={"items": [good, {"problem": ["a"]}, {"problem": "no response"}, 7]},
                   headers=AUTH)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["verdict"] == "correct" and results[0]["decision"] in ("keep", "drop")
    assert [x["decision"] for x in results[1:]] == ["reject"] * 3
    assert "problem: Input should be a valid string" in results[1]["reason"] and "response: Field required" in \
        results[1]["reason"] and results[2]["reason"] == "invalid record: response: Field required"
    assert "JSON object" in results[3]["reason"] and r.json()["counts"] == {results[0]["decision"]: 1, "reject": 3}

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


def test_a_fresh_start_prints_no_misleading_warning(servers):
    """Neither Ray's token-auth notice (raypipe's own local Ray runs without a token, on 127.0.0.1) nor Serve's
    'Connecting to existing Serve app … will not apply' right after raypipe started Serve with those options."""
    import httpx

    strict = (servers["logs"] / "strict.log").read_text()  # started without RAY_AUTH_MODE in its environment
    main = (servers["logs"] / "main.log").read_text()
    assert "Started a local Ray instance" in strict and "[raypipe] scoring with" in strict, strict[-2000:]
    for log in (strict, main):
        assert "Token authentication" not in log and "Connecting to existing Serve app" not in log, log[-3000:]
    assert httpx.get(servers["strict"] + "/healthz").status_code == 200


def test_a_batch_item_that_does_not_fit_is_named_alone():
    from raypipe.online.scorer import invalid_item, rejected

    assert invalid_item({"problem": "p", "response": "r", "extra": [1]}) is None  # other fields are accepted
    assert invalid_item({"problem": "p"}) == "response: Field required"
    assert invalid_item({"problem": 3, "response": "r"}) == "problem: Input should be a valid string"
    assert invalid_item(["p", "r"]) == "an item is a JSON object (a trajectory), not an array"
    assert rejected("response: Field required") == {"decision": "reject", "error": "response: Field required",
                                                    "reason": "invalid record: response: Field required"}


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
    assert cfg["manifest"] == servers["manifest_uri"]
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
def test_open_loop_at_half_the_measured_capacity_answers_every_request(servers):
    """Measure what the server sustains (a short closed loop), then a bounded open loop at half that rate, with real
    20-80 KB trajectories, through raypipe.online.client with retries off. The rate comes from this machine, now; when
    other work takes the cores mid-test, the server may turn requests away with 503 + Retry-After (counted)."""
    from raypipe.online.loadgen import closed_loop, fixed_rate

    bodies = [json.dumps(r).encode() for r in raw_rows() if 20_000 <= len(json.dumps(r).encode()) <= 80_000]
    assert len(bodies) >= 10
    url = servers["main"] + "/v1/score"
    warm = closed_loop(url, bodies, 300, clients=4, token=TOKEN, max_requests=len(bodies))  # each body once
    assert warm.statuses[200] == len(bodies), warm.summary()
    for attempt in (1, 2):  # a probe that overestimated (other work took the cores) is measured once more
        probe = closed_loop(url, bodies, 6, clients=4, token=TOKEN)
        capacity, seconds = probe.rate, 15
        rate = capacity / 2
        print(f"attempt {attempt}: capacity {capacity:.1f} req/s (closed loop, 4 clients, 6 s); open loop at "
              f"{rate:.1f} req/s for {seconds} s; load average {os.getloadavg()[0]:.1f}")
        assert probe.server_errors == 0 and not probe.errors, probe.summary()
        assert capacity >= 10, f"the server sustains only {capacity:.1f} req/s of real trajectories: {probe.summary()}"

        # The client's in-flight bound sits above the server's admission limit (64 + 256): the server decides overload.
        before = settled_scrape(servers["metrics"])
        result = fixed_rate(url, bodies, rate=rate, seconds=seconds, token=TOKEN, max_in_flight=1024, timeout_s=120)
        print("load:", result.summary(), f"load average {os.getloadavg()[0]:.1f}")
        assert not result.errors and result.answered == result.sent, result.summary()
        if result.skipped == 0 or attempt == 2:
            break
    # Every scheduled request is sent and answered: nothing skipped, lost or failed in transport.
    assert result.sent == int(rate * seconds) and result.skipped == 0, result.summary()
    assert not result.errors and result.answered == result.sent, result.summary()
    # The only server error allowed is the overload answer, 503 with Retry-After, and most requests are scored.
    assert set(result.statuses) <= {200, 503} and result.retry_after_missing == 0, result.summary()
    assert result.statuses[200] >= result.sent / 2, result.summary()
    # The server's own metrics count what the client saw: no answer left the replica uncounted.
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))  # noqa: E731
    wait_for_counts(servers["metrics"], {
        key("ray_raypipe_score_requests_total", route="/v1/score", status="200"): result.statuses[200],
        key("ray_raypipe_score_rejected_requests_total", route="/v1/score", status="503"): result.statuses[503],
    }, before)


def scrape(url: str) -> list[tuple[str, dict, float]]:
    """(sample name, labels, value) of every raypipe sample at a Ray metrics export endpoint."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return [(x.name, x.labels, x.value) for family in text_string_to_metric_families(text)
            for x in family.samples if x.name.startswith("ray_raypipe_")]


def total(samples, name: str, **labels) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def settled_scrape(url: str, quiet_s: float = 3.0, timeout_s: float = 60) -> list:
    """A scrape once the export has stopped changing for `quiet_s`: earlier tests' requests are all counted."""
    deadline, last, since = time.time() + timeout_s, None, time.time()
    while True:
        now = scrape(url)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s or time.time() > deadline:
            return now
        time.sleep(0.5)


def wait_for_counts(url: str, want: dict, before: list, timeout_s: float = 60) -> list:
    """Poll the export until every (name, labels) count has grown by what was sent; return the last scrape."""
    deadline = time.time() + timeout_s
    while True:
        now = scrape(url)
        grown = {key: total(now, key[0], **dict(key[1])) - total(before, key[0], **dict(key[1])) for key in want}
        if all(grown[k] >= n for k, n in want.items()) or time.time() > deadline:
            assert grown == want, grown  # exactly what was sent: nothing missed, nothing counted twice
            return now
        time.sleep(1)


def test_metrics_export_counts_requests_rejections_and_decisions_by_bounded_source(servers):
    """After a few requests the Prometheus export of Ray (polled, with a time limit) holds exactly their counts."""
    import httpx

    known = sorted(json.loads((servers["run"] / "manifest.json").read_text())["policy"]["thresholds"])[0]
    row = {"problem": "1+1?", "response": "<think>\nPerhaps 2.\n</think>\n\\boxed{2}", "reference_answer": "2"}
    before = settled_scrape(servers["metrics"])
    for i in range(3):
        assert httpx.post(servers["main"] + "/v1/score", json={**row, "source": known, "id": f"m{i}"},
                          headers=AUTH).status_code == 200
    assert httpx.post(servers["main"] + "/v1/score", json={**row, "source": "user-chosen-label-x"},
                      headers=AUTH).status_code == 200
    assert httpx.post(servers["main"] + "/v1/score", json={"response": "x"}, headers=AUTH).status_code == 422
    assert httpx.post(servers["main"] + "/v1/score", json=row).status_code == 401
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))  # noqa: E731
    after = wait_for_counts(servers["metrics"], {
        key("ray_raypipe_score_requests_total", route="/v1/score", status="200"): 4,
        key("ray_raypipe_score_rejected_requests_total", route="/v1/score", status="422"): 1,
        key("ray_raypipe_score_rejected_requests_total", route="/v1/score", status="401"): 1,
        key("ray_raypipe_score_decisions_total", source=known): 3,
        key("ray_raypipe_score_decisions_total", source="other"): 1,
    }, before)
    sources = {lab.get("source") for n, lab, _ in after if n == "ray_raypipe_score_decisions_total"}
    assert "user-chosen-label-x" not in sources and sources <= {*json.loads(
        (servers["run"] / "manifest.json").read_text())["policy"]["thresholds"], "other"}
    assert any(n == "ray_raypipe_score_queue_depth" for n, _, _ in after)

    # Overload and body limits on the strict server: the export counts the 503s and 413s its clients saw.
    before = settled_scrape(servers["strict_metrics"])
    hostile = {"problem": "p", "reference_answer": "7",
               "response": f"<think>\nhmm\n</think>\nThe answer is $\\boxed{{{HOSTILE}}}$."}
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: httpx.post(servers["strict"] + "/v1/score", json={**hostile, "id": f"o{i}"},
                                                   timeout=60).status_code, range(6)))
    too_big = httpx.post(servers["strict"] + "/v1/score", json={**row, "response": "y" * (70 << 10)})
    assert too_big.status_code == 413 and codes.count(503) >= 1, codes
    wait_for_counts(servers["strict_metrics"], {
        key("ray_raypipe_score_rejected_requests_total", route="/v1/score", status="503"): codes.count(503),
        key("ray_raypipe_score_rejected_requests_total", route="/v1/score", status="413"): 1,
    }, before)


def test_grafana_dashboard_reads_only_metrics_the_server_exports(servers):
    import re

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "serve" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(ray_raypipe_[a-z_]+)", e)}
    exported = {n for n, _, _ in scrape(servers["metrics"])}
    assert used and used <= exported, used - exported
    assert {"ray_raypipe_score_queue_depth", "ray_raypipe_score_rejected_requests_total",
            "ray_raypipe_score_decisions_total"} <= used


def test_readme_jsonl_example_filters_a_stream_through_the_client(servers, tmp_path, monkeypatch):
    """The README's `raypipe.online.client` example, run as written against the server (only its URL changed)."""
    import asyncio
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"(async def filter_jsonl.*?)\n\n", readme, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", servers["main"])
    rows = raw_rows()[:40] + [{"problem": "p"}]  # the last one is a 422 reject: skipped, never fatal
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("RAYPIPE_API_TOKEN", TOKEN)
    namespace: dict = {}
    exec("import json\nfrom raypipe.online.client import AsyncScoringClient\n" + code, namespace)
    asyncio.run(namespace["filter_jsonl"](str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")))
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    batch = batch_decisions(servers["run"])
    want = [r for r in rows[:40] if batch[(r.get("source") or r.get("model"), r["id"])]["decision"] == "keep"]
    assert kept == want and 0 < len(kept) < 40


def test_generation_scored_by_the_service_decides_as_in_process(servers, capsys, tmp_path, monkeypatch):
    """`raypipe generate --scorer URL` (the running service, on the batch run's manifest) gives each streamed unit the
    decision that the workers' own scorer gives with the same thresholds (--reference-manifest)."""
    from raypipe.eval.replay_server import replay_app, serve_in_thread

    path = str(TRAJECTORIES / "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl")
    rows = [json.loads(line) for line in open(path)]
    common = ["--input", path, "--backend", "openai", "--abort-when", "none", "--source", rows[0]["model"],
              "--num-cpus", "2"]
    monkeypatch.setenv("RAYPIPE_SCORER_TOKEN", TOKEN)
    with serve_in_thread(replay_app(rows, tokens_per_s=50_000)) as url:
        run_cli(capsys, "generate", "--output", tmp_path / "remote", "--model", url, "--scorer", servers["main"],
                *common)
    monkeypatch.delenv("RAYPIPE_SCORER_TOKEN")
    with serve_in_thread(replay_app(rows, tokens_per_s=50_000)) as url:
        run_cli(capsys, "generate", "--output", tmp_path / "local", "--model", url, "--reference-manifest",
                servers["run"] / "manifest.json", *common)

    def units(out: Path) -> dict:
        return {u["id"]: (u["verdict"], u["decision"], u["reason"]) for u in
                (json.loads(p.read_text()) for p in (out / "generation" / "units").glob("*.json"))}
    remote, local = units(tmp_path / "remote"), units(tmp_path / "local")
    assert remote == local and len(remote) == 30
    assert {d for _, d, _ in remote.values()} == {"keep", "drop"}
    assert {r.split(";")[0] for _, _, r in remote.values()} >= {"kept", "verdict:wrong"}


def test_sigterm_stops_the_server_cleanly(servers):
    """Last in the module: the main server (manifest on S3, token from the environment) exits 0 on SIGTERM."""
    import httpx

    assert httpx.get(servers["main"] + "/healthz").status_code == 200
    rc = servers["main_process"].stop()
    assert rc == 0, (servers["logs"] / "main.log").read_text()[-3000:]
