"""Start and stop real Ray nodes for tests: loopback only, free ports, a private --temp-dir, and a stop that
kills exactly that temp dir's processes (never `ray stop`, which would stop other Ray instances on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cluster_helpers import REPO

RAY = str(Path(sys.executable).parent / "ray")


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
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",  # no dependence on a token some other local Ray left in ~/.ray
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
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


def start_head(temp_dir: str, resources: dict[str, float], num_cpus: int = 2) -> tuple[str, int]:
    """A head node on 127.0.0.1; returns (dashboard URL, GCS port)."""
    gcs, dashboard, client, agent = free_ports(4)
    start_node(
        [
            "--head",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client),
            "--dashboard-agent-listen-port",
            str(agent),
            "--temp-dir",
            temp_dir,
            "--resources",
            json.dumps(resources),
            *common_args(num_cpus),
        ],
        ray_env(),
    )
    return f"http://127.0.0.1:{dashboard}", gcs


def start_worker(gcs_port: int, resources: dict[str, float], num_cpus: int = 2) -> None:
    (agent,) = free_ports(1)
    start_node(
        [
            "--address",
            f"127.0.0.1:{gcs_port}",
            "--dashboard-agent-listen-port",
            str(agent),
            "--resources",
            json.dumps(resources),
            *common_args(num_cpus),
        ],
        ray_env(),
    )


def common_args(num_cpus: int) -> list[str]:
    return [
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        str(num_cpus),
        "--object-store-memory",
        str(150 * 2**20),
        "--disable-usage-stats",
    ]


def submit_job(
    dashboard: str, entrypoint: list[str], timeout: int, working_dir: bool = False
) -> subprocess.CompletedProcess:
    """`ray job submit` and wait; stdout holds the job's logs and final status."""
    extra = ["--working-dir", "."] if working_dir else []
    return subprocess.run(
        [RAY, "job", "submit", "--address", dashboard, *extra, "--", *entrypoint],
        env=ray_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main_entrypoint(run_root: Path, *overrides: str) -> list[str]:
    """`python -m rlvr_ray.main` on the test config, writing under ``run_root`` (run/ and warm_start/)."""
    return [sys.executable, "-m", "rlvr_ray.main", "--config-name", "train_rlvr_test", *overrides,
            f"output_dir={run_root / 'run'}", f"warm_start_dir={run_root / 'warm_start'}"]
