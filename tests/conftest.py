"""Shared fixtures: real local Ray, a real S3-protocol server (moto) on 127.0.0.1, and the shared real data."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TRAJECTORIES = SHARED_DATA / "trajectories"
BENCHMARKS = SHARED_DATA / "benchmarks"
R1 = SHARED_DATA / "r1"

# Set before anything starts Ray, so every Ray worker inherits them.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAYPIPE_CACHE", str(ROOT / ".cache" / "raypipe"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_REGION": "us-east-1"}.items():
    os.environ[k] = v
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("RAY_ADDRESS", None)


# Test tiers, marked from the fixtures a test uses (pytest_collection_modifyitems), so a new test lands in its tier
# without anyone remembering a marker. `make test-fast` runs what none of these marks: no Ray, no spawned process,
# no server; an unmarked test that starts one anyway fails, naming the fixture to ask for.
TIER_FIXTURES = {
    "ray": {"ray_local", "cluster"},
    "server": {"s3_server", "s3_bucket", "fixed_server", "served_tiny", "server", "servers"},
    "subprocess": {"spawn"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in TIER_FIXTURES.items():
            if used & fixtures:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def spawn():
    """Declares that a test starts processes of its own (the `raypipe` CLI, a server, a Ray head): its tier."""
    import subprocess

    return subprocess


VERIFIER_WORKER = "raypipe.core.verify"


@pytest.fixture(autouse=True)
def _tier_guard(request, monkeypatch):
    """In a test of the fast tier, starting Ray or a process is an error that names the fixture to use."""
    marks = {m.name for m in request.node.iter_markers()}
    if marks & {"ray", "subprocess", "server", "slow", "vllm"}:
        return
    import subprocess

    popen = subprocess.Popen.__init__

    def no_process(self, args, *rest, **kwargs):
        # The verifier's sandbox worker (raypipe.core.verify) is part of the pure logic: allowed in every tier.
        if isinstance(args, (list, tuple)) and VERIFIER_WORKER in args:
            return popen(self, args, *rest, **kwargs)
        raise RuntimeError(f"{request.node.nodeid} starts a process: give it the `spawn` fixture (its tier)")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    try:
        import ray
    except ImportError:
        return

    def no_ray(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray: give it the `ray_local` fixture (its tier)")

    monkeypatch.setattr(ray, "init", no_ray)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_shared_data() -> None:
    if not TRAJECTORIES.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    need_shared_data()
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session: 2 CPUs, a modest object store, no dashboard."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=1 << 30, include_dashboard=False,
                 log_to_driver=False)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode on 127.0.0.1; yields its endpoint URL. Tests pass it explicitly (--s3-endpoint)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; yields (endpoint, bucket name)."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=name)
    yield s3_server, name


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from raypipe.tiny import build_tiny

    return build_tiny()


def raypipe_cli() -> list[str]:
    return [sys.executable, "-m", "raypipe.cli"]


def run_cli(capsys, *argv: str) -> str:
    """A raypipe command in this process (on the session's Ray, from the `ray_local` fixture): what a subprocess
    would prove, without a second interpreter and a second Ray. Returns what it printed."""
    from raypipe.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, (out.out + out.err)[-4000:]
    return out.out
