"""Multi-node behaviour on one machine: a `ray start --head` node and `ray start --address` worker nodes, jobs sent
with `ray job submit --working-dir .`, and a worker node killed in the middle of a curation job."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_fixtures import RAY, ROOT, LocalCluster, cluster_env  # noqa: E402
from conftest import TRAJECTORIES, need_shared_data  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MATH500 = TRAJECTORIES / "skyt1_math-correct-5K-27B_math500.jsonl"


@pytest.fixture(scope="module")
def cluster(spawn):
    need_shared_data()
    c = LocalCluster(cpus_per_node=1)
    try:
        c.start_head()
        c.add_worker()
        c.wait_nodes(2)
        yield c
    finally:
        c.shutdown()


def write_shards(folder: Path, n_shards: int, rows_per_shard: int, offset: int = 0) -> int:
    lines = MATH500.read_text().splitlines()[offset: offset + n_shards * rows_per_shard]
    folder.mkdir(parents=True)
    for i in range(n_shards):
        chunk = lines[i * rows_per_shard:(i + 1) * rows_per_shard]
        (folder / f"shard{i:02d}.jsonl").write_text("\n".join(chunk) + "\n")
    return len(lines)


def submit(cluster: LocalCluster, args: list[str], submission_id: str, wait: bool = True) -> subprocess.Popen:
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id,
           "--working-dir", ".", *([] if wait else ["--no-wait"]), "--", "python", "jobs/curate.py", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def job_status(cluster: LocalCluster, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(cluster.dashboard).get_job_status(submission_id).value)


def job_nodes(cluster: LocalCluster, name_part: str) -> tuple[set[str], int]:
    """Node ids where the job's actors whose class name contains `name_part` ran, and their restarts in total."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard, detail=True, limit=10000, raise_on_missing_output=False)
    mine = [a for a in actors if name_part in (a.class_name or "") or name_part in (a.repr_name or "")]
    return {a.node_id for a in mine}, sum(int(a.num_restarts or 0) for a in mine)


def check_output(out: Path, n_rows: int) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert manifest["balanced"] and c["records"] == c["input_rows"] == n_rows == c["kept"] + c["dropped"] + c["rejected"]
    ids = []
    for part in ("curated", "dropped", "rejects"):
        for f in sorted((out / part).glob("*.parquet")):
            t = pq.read_table(f)
            ids += t.column("id").to_pylist() if "id" in t.column_names else \
                [f"reject:{s}:{r}" for s, r in zip(t.column("shard").to_pylist(), t.column("row").to_pylist())]
    assert len(ids) == n_rows, f"{len(ids)} output rows for {n_rows} input rows"
    assert len(set(ids)) == len(ids), "duplicated rows in the output"
    return manifest


PROBE = """
import os, ray
ray.init()
before = os.stat("raypipe/curate/report.py").st_ino


@ray.remote(num_cpus=0, resources={"worker_node": 1})
def elsewhere():
    return os.getcwd()


print("worker node's copy:", ray.get(elsewhere.remote()))
print("PROBE", os.path.exists("raypipe/curate/report.py") and os.stat("raypipe/curate/report.py").st_ino == before)
"""


def test_the_drivers_working_dir_outlives_a_task_on_another_node(cluster, tmp_path):
    """A node unpacks a job's working dir itself, removing what it finds there first: nodes sharing a disk would
    delete the running driver's files at the worker node's first task, and the driver's next lazy import (the
    report's modules) would fail. Real nodes share no disk; the test cluster's nodes must not either."""
    (tmp_path / "probe.py").write_text(PROBE)
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--", "python",
           str(tmp_path / "probe.py")]
    p = subprocess.run(cmd, cwd=ROOT, env=cluster_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "PROBE True" in p.stdout, (p.stdout + p.stderr)[-3000:]


def test_job_submit_streams_logs_exits_right_and_uses_both_nodes(cluster, tmp_path):
    n_rows = write_shards(tmp_path / "in", n_shards=4, rows_per_shard=10)
    n_rows += add_slow_rows(tmp_path / "in")  # each shard outlasts an actor's start: both actors get work
    out = tmp_path / "out"
    sid = f"curate-{uuid.uuid4().hex[:8]}"
    proc = submit(cluster, ["--input", str(tmp_path / "in"), "--output", str(out), "--verify-timeout", "2"], sid)
    lines, status_at_first_log = [], None
    for line in proc.stdout:
        lines.append(line)
        if status_at_first_log is None and "[raypipe]" in line:
            status_at_first_log = job_status(cluster, sid)
    rc = proc.wait(timeout=600)
    log = "".join(lines)
    assert rc == 0, log[-4000:]
    # The job's own output arrived while the job was still running: the logs stream, they are not dumped at the end.
    assert status_at_first_log == "RUNNING", status_at_first_log
    assert "phase 1/3 score" in log and f"{n_rows} records = " in log and "succeeded" in log
    assert job_status(cluster, sid) == "SUCCEEDED"
    check_output(out, n_rows)

    nodes = {n["raylet"]["nodeId"] for n in cluster.alive_nodes()}
    used, _ = job_nodes(cluster, "ScoreChunkActor")
    assert len(nodes) == 2 and used == nodes, f"scoring actors ran on {used}, cluster nodes {nodes}"

    # The experiment runner's job entry point works from the uploaded working dir (plan only: --dry-run).
    exp = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--", "python",
                          "jobs/experiment.py", "cluster/experiments/paper-cpu.yaml", "--output",
                          str(tmp_path / "exp"), "--dry-run"], cwd=ROOT, env=cluster_env(), capture_output=True,
                         text=True, timeout=300)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    from raypipe.experiment.config import load_experiment
    from raypipe.experiment.runner import stages

    expected = len(stages(load_experiment(str(ROOT / "cluster" / "experiments" / "paper-cpu.yaml"))))
    assert exp.stdout.count(" to run ") == expected > 15 and "raypipe train" in exp.stdout, exp.stdout[-2000:]

    # A failing job: the exit status says so, and the reason is in the streamed log.
    bad = submit(cluster, ["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out2")],
                 f"curate-bad-{uuid.uuid4().hex[:8]}")
    text = bad.communicate(timeout=300)[0]
    assert bad.returncode != 0
    assert "input not found" in text and "failed" in text


def add_slow_rows(folder: Path) -> int:
    """One row per shard whose answer only the verifier's wall-clock bound ends: every shard takes at least that
    bound, so a node killed after the first shard finished surely stops an actor in the middle of one."""
    shards = sorted(folder.glob("*.jsonl"))
    for i, f in enumerate(shards):
        row = {"id": f"slow-{i}", "problem": "slow", "reference_answer": "7", "model": "slow",
               "response": f"<think>\nhmm\n</think>\nThe answer is $\\boxed{{9^{{9^{{9^{{9^{{9^{{9}}}}}}}}}}+{i}}}$."}
        f.write_text(json.dumps(row) + "\n" + f.read_text())
    return len(shards)


def test_worker_node_killed_mid_job_still_finishes_balanced(cluster, tmp_path):
    n_shards = 8
    n_rows = write_shards(tmp_path / "in", n_shards=n_shards, rows_per_shard=12, offset=100)
    n_rows += add_slow_rows(tmp_path / "in")
    out = tmp_path / "out"
    sid = f"curate-kill-{uuid.uuid4().hex[:8]}"
    proc = submit(cluster, ["--input", str(tmp_path / "in"), "--output", str(out), "--verify-timeout", "3"], sid)
    victim = next(n for n in cluster.nodes if n.name.startswith("worker") and n.alive())
    done = out / "_work" / "done"
    deadline = time.time() + 400
    while time.time() < deadline and not (done.is_dir() and any(done.glob("*.json"))):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        time.sleep(0.2)
    finished_before = len(list(done.glob("*.json")))
    assert 0 < finished_before < n_shards, "the kill must land in the middle of the scoring phase"
    cluster.kill(victim)  # SIGKILL to the node's whole process group: raylet, its workers, its agents
    # The replacement node that KubeRay or the autoscaler would bring up for the lost pod / instance.
    cluster.add_worker()
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-4000:]
    assert job_status(cluster, sid) == "SUCCEEDED"
    check_output(out, n_rows)
    _, restarts = job_nodes(cluster, "ScoreChunkActor")
    assert restarts >= 1, "the scoring actor on the killed node should have been restarted"
    # The same input on one node, undisturbed, gives the same records and decisions.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    alone = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(tmp_path / "in"), "--output",
                            str(tmp_path / "alone"), "--verify-timeout", "3", "--num-cpus", "2"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert decisions(out) == decisions(tmp_path / "alone")


def decisions(out: Path) -> list[tuple]:
    return sorted((r["source"], r["id"], r["decision"], r["verdict"], r["branch_score"])
                  for part in ("curated", "dropped") for f in (out / part).glob("*.parquet")
                  for r in pq.read_table(f).to_pylist())


def test_driver_killed_then_resubmitted_resumes(cluster, tmp_path):
    n_shards = 6
    n_rows = write_shards(tmp_path / "in", n_shards=n_shards, rows_per_shard=10, offset=300)
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "in"), "--output", str(out)]
    sid = f"curate-drv-{uuid.uuid4().hex[:8]}"
    proc = submit(cluster, args, sid)
    done = out / "_work" / "done"
    deadline = time.time() + 400
    while time.time() < deadline and not (done.is_dir() and any(done.glob("*.json"))):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        time.sleep(0.2)
    subprocess.run([RAY, "job", "stop", "--address", cluster.dashboard, sid], env=cluster_env(), check=True,
                   capture_output=True, timeout=120)
    proc.communicate(timeout=120)
    assert job_status(cluster, sid) == "STOPPED"
    stamps = {p.name: p.stat().st_mtime_ns for p in done.glob("*.json")}

    again = submit(cluster, args, f"{sid}-again")
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log[-4000:]
    m = re.search(r"(\d+) already scored", log)
    assert m and int(m[1]) >= len(stamps) > 0, log[-3000:]
    for name, t in stamps.items():
        assert (done / name).stat().st_mtime_ns == t, f"{name} was scored again"
    check_output(out, n_rows)
