"""Multi-node placement for real on one machine: a Ray head and a second Ray node with different custom resources
(like two KubeRay worker groups), the test config submitted with `ray job submit` and its role overrides, then
Ray's state API shows the rollout actors on one node and the Ray Train workers on the other.

Everything binds to 127.0.0.1 on free ports with a private --temp-dir; both nodes are stopped by killing exactly
the processes of that temp dir (never `ray stop`, which would stop other Ray instances on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import REPO

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
HEAD_RESOURCES = {"learner": 1}  # the "learner group"; the job driver runs here too, as on a KubeRay head
WORKER_RESOURCES = {"rollout": 1, "verifier": 2}  # the "rollout + verifier group"
ROLE_OVERRIDES = ["rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env.update({
        "RAY_AUTH_MODE": "disabled",  # no dependence on a token some other local Ray left in ~/.ray
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def start_node(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([RAY, "start", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"ray start {' '.join(args)} failed:\n{output}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def node_processes(temp_dir: str) -> set[int]:
    """Processes of the Ray nodes using ``temp_dir`` (GCS, raylets, dashboard, ...) and all their descendants."""
    roots = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and temp_dir in _cmdline(int(e.name))]
    tree, found, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(tree.get(pid, []))
    return found - {os.getpid(), os.getppid()}


def stop_nodes(temp_dir: str) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = node_processes(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)}
            time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.fixture
def two_node_cluster() -> Iterator[dict[str, str]]:
    """A head (resource `learner`) and a second node (`rollout`, `verifier`), both on 127.0.0.1."""
    temp_dir = tempfile.mkdtemp(prefix="rlvr-mn-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    gcs, dashboard, client, head_agent, worker_agent = free_ports(5)
    env = ray_env()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--object-store-memory", str(150 * 2**20),
              "--disable-usage-stats"]
    try:
        start_node(["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                    "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(head_agent),
                    "--temp-dir", temp_dir, "--resources", json.dumps(HEAD_RESOURCES), *common], env)
        start_node(["--address", f"127.0.0.1:{gcs}", "--dashboard-agent-listen-port", str(worker_agent),
                    "--resources", json.dumps(WORKER_RESOURCES), *common], env)
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "temp_dir": temp_dir, **env}
    finally:
        stop_nodes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def node_with(resource: str, address: str) -> str:
    from ray.util.state import list_nodes

    alive = [node for node in list_nodes(address=address, detail=True) if node.state == "ALIVE"]
    nodes = [node for node in alive if resource in node.resources_total]
    assert len(nodes) == 1, f"expected one node with {resource}, got {nodes}"
    return nodes[0].node_id


def actor_nodes(address: str) -> dict[str, set[str]]:
    """class name -> node ids of its actors (alive or dead: the state API keeps finished actors)."""
    from ray.util.state import list_actors

    placed: dict[str, set[str]] = {}
    for actor in list_actors(address=address, detail=True, limit=10000, raise_on_missing_output=False):
        if actor.node_id:
            placed.setdefault(actor.class_name, set()).add(actor.node_id)
    return placed


@pytest.mark.timeout(1200)
def test_roles_land_on_the_nodes_their_resources_name(
    two_node_cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = two_node_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    entrypoint = [sys.executable, "-m", "rlvr_ray.main", "--config-name", "train_rlvr_test", *ROLE_OVERRIDES,
                  f"output_dir={tmp_path / 'run'}", f"warm_start_dir={tmp_path / 'warm_start'}"]
    job = subprocess.run([RAY, "job", "submit", "--address", cluster["dashboard"], "--", *entrypoint],
                         env=cluster, cwd=REPO, capture_output=True, text=True, timeout=1100)
    assert job.returncode == 0 and "succeeded" in job.stdout, f"job failed:\n{job.stdout[-6000:]}\n{job.stderr[-3000:]}"
    assert (tmp_path / "run" / "final_policy").is_dir()

    head, worker = node_with("learner", cluster["dashboard"]), node_with("rollout", cluster["dashboard"])
    assert head != worker
    placed = actor_nodes(cluster["dashboard"])
    rollout = set().union(*(nodes for name, nodes in placed.items() if "Rollout" in name))
    learner = set().union(*(nodes for name, nodes in placed.items() if "RayTrainWorker" in name))
    verifier = set().union(*(nodes for name, nodes in placed.items() if "Verifier" in name))
    assert rollout == {worker}, f"rollout actors on {rollout}; classes seen: {sorted(placed)}"
    assert learner == {head}, f"Ray Train workers on {learner}; classes seen: {sorted(placed)}"
    assert verifier == {worker}
