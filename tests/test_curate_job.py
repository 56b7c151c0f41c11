"""The curation job end to end on a real local Ray: real data, S3 through moto, hostile input, resume, config."""
from __future__ import annotations

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from raypipe.curate.config import CurateConfig
from raypipe.curate.job import ConfigMismatch, run_curate
from raypipe.core.policy import n_to_drop
from tests.conftest import R1, ROOT, TRAJECTORIES, raypipe_cli

pytestmark = pytest.mark.timeout(600)


def read_part(out: Path, part: str) -> list[dict]:
    files = sorted(glob.glob(str(out / part / "*.parquet")))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def check_contract(out: Path, drop_top: float = 0.10) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    kept, dropped, rejects = read_part(out, "curated"), read_part(out, "dropped"), read_part(out, "rejects")
    c = manifest["counts"]
    assert (c["kept"], c["dropped"], c["rejected"]) == (len(kept), len(dropped), len(rejects))
    assert c["records"] == len(kept) + len(dropped) + len(rejects)
    keys = [(r["source"], r["id"]) for r in kept + dropped]
    assert len(keys) == len(set(keys))
    for r in kept + dropped:
        for col in ("id", "source", "verdict", "answer_extracted", "n_steps", "branch_ratio", "branch_score", "decision", "reason"):
            assert col in r
        assert r["reason"]
    by = collections.defaultdict(lambda: ([], []))
    for r in kept:
        by[r["source"]][0].append(r["branch_score"])
    for r in dropped:
        if r["verdict"] == "correct":
            by[r["source"]][1].append(r["branch_score"])
        else:
            assert r["reason"] == f"verdict:{r['verdict']}"
    for src, (k, d) in by.items():
        assert len(d) == n_to_drop(drop_top, len(k) + len(d)), src
        if k and d and manifest["policy"]["rule"] == "top":
            assert min(x if x is not None else -1 for x in d) >= max(x if x is not None else -1 for x in k)
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 3
    for key in ("by_source", "config", "config_hash", "versions"):
        assert key in manifest
    assert set(manifest["versions"]) >= {"raypipe", "ray", "math-verify", "lexicon"}
    return manifest


@pytest.fixture(scope="module")
def local_run(ray_local, tmp_path_factory, shared_data):
    """The real trajectories curated on Ray (an input this small would run in process without --in-process-below-mb 0)."""
    out = tmp_path_factory.mktemp("curate") / "out"
    manifest = run_curate(CurateConfig(input=str(TRAJECTORIES), output=str(out), num_cpus=2, in_process_below_mb=0))
    return out, manifest


def test_real_trajectories_contract(local_run):
    out, manifest = local_run
    m = check_contract(out)
    assert m["counts"]["input_rows"] == m["counts"]["records"] == 600 and m["counts"]["rejected"] == 0
    assert len(m["by_source"]) == 3
    for src, v in m["by_source"].items():
        assert v["threshold"]["n_drop"] == n_to_drop(0.1, v["verdicts"]["correct"])
    assert m["timing"]["response_bytes"] > 8_000_000


def test_s3_gives_the_same_ids_as_local(local_run, s3_bucket):
    out, _ = local_run
    endpoint, bucket = s3_bucket
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for f in TRAJECTORIES.glob("*.jsonl"):
        s3.upload_file(str(f), bucket, f"raw/{f.name}")
    run_curate(CurateConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/out", s3_endpoint=endpoint,
                            in_process_below_mb=0,  # the actors reading S3, as on a cluster
                            select_in_driver_below_rows=0))  # phase 2 as tasks (local_run selects in the driver)
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert "out/manifest.json" in names and "out/report.html" in names
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
    local = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == local["counts"]
    import pyarrow.fs as pafs

    from raypipe.core.io import Storage

    fs, _ = Storage(endpoint).filesystem(f"s3://{bucket}/out")
    for part in ("curated", "dropped"):
        files = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/out/{part}")) if i.path.endswith(".parquet")]
        remote = sorted((r["source"], r["id"], r["decision"]) for f in files for r in pq.read_table(f, filesystem=fs).to_pylist())
        assert remote == sorted((r["source"], r["id"], r["decision"]) for r in read_part(out, part))


def test_different_config_is_refused(local_run):
    out, _ = local_run
    with pytest.raises(ConfigMismatch, match="drop_top"):
        run_curate(CurateConfig(input=str(TRAJECTORIES), output=str(out), drop_top=0.2))


HOSTILE_BOUND_S = 180  # the stated bound for the hostile file below (verify timeout 2 s per comparison)


def test_hostile_input(ray_local, tmp_path):
    marker = tmp_path / "pwned"
    good = {"problem": "What is 1+1?", "answer": "2", "response": "<think>Perhaps 2.</think> \\boxed{2}", "source": "h"}
    rows = [json.dumps({**good, "id": f"g{i}"}).encode() for i in range(5)]
    rows += [
        b'{"problem": "broken", "answer": ',  # malformed JSON
        b'{"problem": "\xff\xfe bad bytes", "answer": "1", "response": "x"}',  # not UTF-8
        json.dumps({"id": "nofield", "problem": "p"}).encode(),  # missing response
        json.dumps({"id": "huge", "problem": "p", "answer": "1", "source": "h",
                    "response": "<think>" + ("Perhaps more. " * 400_000)}).encode(),  # a 5 MB response, unfinished
        json.dumps({"id": "deep", "problem": "p", "answer": "1", "source": "h",
                    "response": "<think>a</think>\\boxed{" + "{" * 10000 + "1" + "}" * 10000 + "}"}).encode(),
        json.dumps({"id": "tower", "problem": "p", "answer": "3", "source": "h",
                    "response": "<think>a</think>\\boxed{9^{9^{9^{9}}}}"}).encode(),
        json.dumps({"id": "code", "problem": "p", "answer": "1", "source": "h",
                    "response": f"<think>a</think>\\boxed{{__import__('os').system('touch {marker}')}}"}).encode(),
        json.dumps({"id": "types", "problem": {"not": "text"}, "answer": "1", "response": "x"}).encode(),
    ]
    src = tmp_path / "in"
    src.mkdir()
    (src / "hostile.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    t0 = time.time()
    m = run_curate(CurateConfig(input=str(src), output=str(tmp_path / "out"), verify_timeout_s=2.0,
                                in_process_below_mb=0))  # the actors' verifier workers bound it, as on a cluster
    assert time.time() - t0 < HOSTILE_BOUND_S
    c = m["counts"]
    assert c["input_rows"] == c["records"] == 13 and c["records"] == c["kept"] + c["dropped"] + c["rejected"]
    rejects = {r["row"]: r for r in read_part(tmp_path / "out", "rejects")}  # by line, from 1
    assert "malformed JSON" in rejects[6]["reason"] and rejects[6]["raw"].startswith('{"problem": "broken"')
    assert "not UTF-8" in rejects[7]["reason"]
    assert "missing field" in rejects[8]["reason"]
    assert "must be a string" in rejects[13]["reason"]
    dropped = {r["id"]: r for r in read_part(tmp_path / "out", "dropped")}
    assert dropped["huge"]["reason"] == "verdict:no_answer"
    assert dropped["deep"]["reason"] == "verdict:error"
    assert dropped["tower"]["verdict"] in ("timeout", "error", "wrong")
    assert dropped["code"]["verdict"] in ("wrong", "error")
    assert not marker.exists()


def kill_session(sid: int) -> None:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, s = (int(x) for x in line.split())
        if s == sid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(1)


def _split_input(dst: Path, n_shards: int = 12) -> None:
    dst.mkdir(parents=True)
    rows = [line for f in sorted(TRAJECTORIES.glob("*.jsonl")) for line in f.open()]
    for i in range(n_shards):
        (dst / f"shard-{i:02d}.jsonl").write_text("".join(rows[i::n_shards]))


def _curate_cmd(inp: Path, out: Path) -> list[str]:
    # on its own Ray (an input this small would be curated in process): the job killed is the Ray job
    return [sys.executable, "-m", "raypipe.cli", "curate", "--input", str(inp), "--output", str(out), "--num-cpus", "2",
            "--in-process-below-mb", "0"]


def test_resume_after_kill(spawn, tmp_path, shared_data):
    inp = tmp_path / "in"
    _split_input(inp)
    clean = tmp_path / "clean"
    run_curate(CurateConfig(input=str(inp), output=str(clean)))
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(_curate_cmd(inp, out), cwd=ROOT, env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    done_dir = out / "_work" / "done"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done_dir.is_dir() and len(list(done_dir.glob("*.json"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    kill_session(proc.pid)  # the driver and every Ray process it started (workers have their own groups)
    proc.wait(timeout=30)
    finished = len(list(done_dir.glob("*.json")))
    assert 2 <= finished < 12
    # resumed in process (the input is small): the chunks Ray finished count, whichever executor resumes them
    rerun = subprocess.run(_curate_cmd(inp, out)[:-2], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{finished} already scored, {12 - finished} to score" in rerun.stdout and "in this process" in rerun.stdout
    check_contract(out)
    def rows(run, part):  # every column but the measured verification time
        return sorted(json.dumps({k: v for k, v in r.items() if k != "verify_ms"}, sort_keys=True, default=str)
                      for r in read_part(run, part))

    for part in ("curated", "dropped", "rejects"):
        assert rows(clean, part) == rows(out, part), part


def test_step_ratio_and_delete_steps(tmp_path, shared_data):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "sky.jsonl").write_text((TRAJECTORIES / "skyt1_math-correct-5K-14B_amc23.jsonl").read_text())
    (inp / "sky2.jsonl").write_text((TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl").read_text())
    (inp / "r1.jsonl").write_text((R1 / "deepseek-r1_aime24.jsonl").read_text())
    ref = "Sky-T1-math-correct-5K-14B"
    m = run_curate(CurateConfig(input=str(inp), output=str(tmp_path / "out"), proxy="step-ratio",
                                reference_source=ref, delete_steps=0.1, seed=7))
    rows = read_part(tmp_path / "out", "curated") + read_part(tmp_path / "out", "dropped")
    sky = [r for r in rows if r["source"] == ref]
    r1 = [r for r in rows if r["source"] == "DeepSeek-R1"]
    assert all(r["step_ratio"] == pytest.approx(1.0) for r in sky if r["problem_id"] in
               {x["problem_id"] for x in r1} | {x["problem_id"] for x in sky})
    assert len(r1) == 30 and sum(r["step_ratio"] is not None for r in r1) == 30  # paired on the same problems
    kept = read_part(tmp_path / "out", "curated")
    assert kept and all(r["steps_deleted"] >= 1 for r in kept if r["n_steps"] >= 5)
    assert m["config"]["delete_steps"] == 0.1


def test_reference_input_is_scored_by_phase_1_and_never_written(tmp_path, shared_data, capsys):
    """--reference-input: B's chunks go through phase 1 into _work/reference/ (resumable like the input's), its
    verified-correct rows' mean steps per problem become the reference; nothing of B reaches the outputs."""
    import numpy as np
    import pyarrow.compute as pc

    from raypipe.core import io
    from raypipe.core.scoring import Scorer
    from raypipe.curate.groupby import REFERENCE_DIR
    from raypipe.curate.shard import load_shard

    a = TRAJECTORIES / "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl"
    b = TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl"
    cfg = CurateConfig(input=str(a), output=str(tmp_path / "out"), proxy="step-ratio", reference_input=str(b),
                       chunk_mb=1)
    m = run_curate(cfg)
    rows = read_part(tmp_path / "out", "curated") + read_part(tmp_path / "out", "dropped")
    assert {r["source"] for r in rows} == {"Sky-T1-math-correct-5K-32B (checkpoint-140)"} and m["counts"]["records"] == 30
    assert len(glob.glob(str(tmp_path / "out" / "_work" / "reference" / "_work" / "done" / "*.json"))) > 1  # chunks

    scorer = Scorer(cfg.scoring()).setup()  # the reference in one process, as the driver once computed it
    records, _, _ = load_shard(str(b), io.Storage())
    scored = scorer.score(records)
    scorer.close()
    scored = scored.filter(pc.equal(scored.column("verdict"), "correct"))
    want: dict = {}
    for pid, n in zip(scored.column("problem_id").to_pylist(), scored.column("n_steps").to_pylist()):
        want.setdefault(pid, []).append(n)
    got = io.read_parquet_dir(str(tmp_path / "out" / REFERENCE_DIR), io.Storage()).to_pylist()
    assert {r["problem_id"]: r["steps"] for r in got} == pytest.approx({p: float(np.mean(v)) for p, v in want.items()})
    assert sum(r["step_ratio"] is not None for r in rows) > 0

    capsys.readouterr()
    run_curate(cfg)  # resumed: neither the input nor the reference is scored again
    log = capsys.readouterr().out
    assert "0 to score" in log and "phase 1/3 score the reference" not in log


def test_job_entrypoint_documents_every_flag(spawn):
    out = subprocess.run([sys.executable, "jobs/curate.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--input", "--output", "--drop-top", "--rule", "--proxy", "--lexicon", "--reference-source",
                 "--config", "--delete-steps", "--s3-endpoint", "--overwrite", "--keep-incorrect"):
        assert flag in out.stdout


def test_a_small_input_is_curated_in_process_with_the_outputs_of_ray(local_run, spawn, tmp_path):
    """Below --in-process-below-mb, with no cluster to join, `raypipe curate` starts no Ray: the
    same stages in the calling process give the Ray run's rows, decisions and thresholds (only the verifier's own
    timing column, verify_ms, differs between any two runs)."""
    import pyarrow.parquet as pq

    ray_out, ray_manifest = local_run
    out = tmp_path / "in-process"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_SUBMISSION_ID")}
    p = subprocess.run([*raypipe_cli(), "curate", "--input", str(TRAJECTORIES), "--output", str(out),
                        "--num-cpus", "2"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no Ray started" in p.stderr + p.stdout and "Started a local Ray instance" not in p.stderr
    for part in ("curated", "dropped", "rejects"):
        names = sorted(f.name for f in (ray_out / part).glob("*.parquet"))
        assert names == sorted(f.name for f in (out / part).glob("*.parquet"))
        for name in names:
            a, b = (pq.read_table(d / part / name) for d in (ray_out, out))
            assert a.schema == b.schema and a.num_rows == b.num_rows
            for col in a.column_names:
                assert col == "verify_ms" or a[col].equals(b[col]), (part, name, col)
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("counts", "by_source", "policy", "suspect_reference", "input_fingerprint", "drop_reasons"):
        assert manifest[key] == ray_manifest[key], key
