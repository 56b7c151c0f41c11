"""Curation against an S3-protocol server that fails some requests: retries recover and nothing is lost; an
object that always fails stops the job with an error that names it."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, TRAJECTORIES, need_shared_data, raypipe_cli  # noqa: E402
from s3_fault_proxy import FaultProxy  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MATH500 = TRAJECTORIES / "skyt1_math-correct-5K-27B_math500.jsonl"


def upload_shards(client, bucket: str, n_shards: int = 4, rows: int = 8) -> set[str]:
    lines = MATH500.read_text().splitlines()[: n_shards * rows]
    for i in range(n_shards):
        body = "\n".join(lines[i * rows:(i + 1) * rows]) + "\n"
        client.put_object(Bucket=bucket, Key=f"raw/shard{i}.jsonl", Body=body.encode())
    return {json.loads(line)["id"] for line in lines}


def curate(endpoint: str, bucket: str, out: str, max_attempts: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAYPIPE_S3_MAX_ATTEMPTS=str(max_attempts), RAY_AUTH_MODE="disabled",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run([*raypipe_cli(), "curate", "--input", f"s3://{bucket}/raw/", "--output",
                           f"s3://{bucket}/{out}/", "--s3-endpoint", endpoint, "--num-cpus", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)


def read_ids(client, bucket: str, prefix: str) -> list[str]:
    ids = []
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        if obj["Key"].endswith(".parquet"):
            data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            ids += pq.read_table(io.BytesIO(data), columns=["id"]).column("id").to_pylist()
    return ids


def test_curation_survives_flaky_s3_and_names_a_dead_object(s3_bucket):
    need_shared_data()
    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)  # set-up and checks go straight to the server
    expected = upload_shards(client, bucket)

    with FaultProxy(endpoint, fail_rate=0.1, seed=7) as proxy:
        run = curate(proxy.endpoint, bucket, "out", max_attempts=10)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Faults of both kinds really happened, on a real share of the traffic.
    assert proxy.counts["503"] >= 3 and proxy.counts["drop"] >= 3, proxy.counts
    manifest = json.loads(client.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
    c = manifest["counts"]
    assert manifest["balanced"] and c["records"] == len(expected) and c["rejected"] == 0
    ids = read_ids(client, bucket, "out/curated/") + read_ids(client, bucket, "out/dropped/")
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected

    dead = f"/{bucket}/raw/shard2.jsonl"
    with FaultProxy(endpoint, permanent=lambda m, p: m == "GET" and p.split("?")[0] == dead) as proxy:
        run = curate(proxy.endpoint, bucket, "out-dead", max_attempts=3)
    assert run.returncode == 1
    err = run.stdout + run.stderr
    summary = [line for line in run.stderr.splitlines() if line.startswith("raypipe curate: the job failed:")]
    assert summary and f"s3://{bucket}/raw/shard2.jsonl" in summary[-1], err[-3000:]
    assert sum(proxy.permanent_hits.values()) >= 3, "the SDK retried the failing object before giving up"
    assert not client.list_objects_v2(Bucket=bucket, Prefix="out-dead/manifest.json").get("Contents")
