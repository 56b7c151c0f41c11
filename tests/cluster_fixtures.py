"""A real multi-node Ray cluster on one machine: `ray start --head` plus `ray start --address` worker nodes.

Each node is a `ray start --block` process in its own session, so a node (raylet, its workers, its agents) is
stopped or killed as one process group, by the id we started, never by name and never with `ray stop` (which
would stop every Ray on the machine).

Addresses: Ray rewrites 127.0.0.1 to the machine's interface address once multi-node is enabled, so the nodes
use other loopback addresses (127.0.0.2, 127.0.0.3, ...): all traffic stays on the loopback interface.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


_GIVEN: set[int] = set()  # ports handed to a node in this process: never handed out twice


def _free_ports(n: int) -> list[int]:
    """`n` free ports, distinct from each other and from every port given before (the kernel may return a port it
    just returned once that socket is closed, and one node with two equal ports exits at once)."""
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in _GIVEN:
                s.close()
                continue
            held.append(s)
        ports = [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()
    _GIVEN.update(ports)
    return ports


def cluster_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
                "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    env.pop("RAY_ADDRESS", None)
    # A job's entrypoint (`python jobs/...`) runs in the node's environment: this interpreter's venv comes first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclass
class Node:
    name: str
    ip: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalCluster:
    """Head on 127.0.0.2; worker nodes on 127.0.0.3, .4, ...; each node its own temp dir under `temp_dir`.

    Nodes must not share a temp dir, as real nodes share no disk: each node's runtime-env agent unpacks a job's
    working dir into `<temp dir>/<session>/runtime_resources` and removes what it finds there first, so a worker
    node's first task would delete the files of the driver running on the head (a lazy import then fails).
    """

    cpus_per_node: int = 1
    object_store_mb: int = 150
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rpc", dir="/tmp"))
    nodes: list[Node] = field(default_factory=list)
    head_ip: str = "127.0.0.2"
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, ip: str, extra: list[str]) -> Node:
        node_dir = Path(self.temp_dir) / name
        node_dir.mkdir(exist_ok=True)
        ports = dict(zip(("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
                          "runtime-env-agent", "metrics-export"), _free_ports(6)))
        args = [RAY, "start", "--block", f"--node-ip-address={ip}", f"--temp-dir={node_dir}",
                f"--num-cpus={self.cpus_per_node}", f"--object-store-memory={self.object_store_mb << 20}",
                *(f"--{k}-port={v}" for k, v in ports.items()), "--disable-usage-stats", *extra]
        log = Path(self.temp_dir) / f"{name}.log"
        proc = subprocess.Popen(args, env=cluster_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.temp_dir)
        node = Node(name, ip, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self) -> Node:
        self.gcs_port, self.dashboard_port, client_port = _free_ports(3)
        node = self._start("head", self.head_ip, [
            "--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={client_port}", '--resources={"head_node": 1}'])
        self.wait_nodes(1)
        return node

    def add_worker(self) -> Node:
        n = sum(1 for x in self.nodes if x.name.startswith("worker"))
        node = self._start(f"worker{n}", f"127.0.0.{3 + n}", [f"--address={self.address}",
                                                             '--resources={"worker_node": 1}'])
        return node

    def alive_nodes(self) -> list[dict]:
        import urllib.request

        with urllib.request.urlopen(f"{self.dashboard}/nodes?view=summary", timeout=10) as r:
            data = json.load(r)
        return [n for n in data["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]

    def wait_nodes(self, n: int, timeout: float = 120) -> list[dict]:
        deadline = time.time() + timeout
        last: Exception | None = None
        while time.time() < deadline:
            for node in self.nodes:
                if not node.alive() and node.name == "head":
                    raise RuntimeError(f"head node exited:\n{node.log.read_text()[-3000:]}")
            try:
                alive = self.alive_nodes()
                if len(alive) >= n:
                    return alive
            except Exception as e:  # the dashboard is still starting
                last = e
            time.sleep(1)
        raise TimeoutError(f"{n} nodes not alive after {timeout}s ({last}); logs in {self.temp_dir}")

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Stop a node's whole process group: SIGKILL is a node failure, SIGTERM a graceful drain."""
        try:
            os.killpg(node.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            node.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=30)

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            if node.alive():
                self.kill(node, signal.SIGKILL)
            else:
                try:  # the group leader may be gone while its children live on
                    os.killpg(node.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
