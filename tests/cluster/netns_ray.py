"""A Ray cluster and an MLflow tracking server on the hosts of :mod:`netns`, and jobs submitted from outside them.

:func:`netns_cluster` starts, each on its own host (network + mount namespace, see :mod:`netns`):

- ``tracking``: ``mlflow server`` with ``--serve-artifacts``, so runs send metrics *and* artifacts over HTTP and
  the submitter downloads them over HTTP (its store is private to that host);
- ``storage``: an S3-compatible server (moto's ``moto_server``, in memory) with the bucket ``rlvr``: the runs'
  ``storage_uri`` is ``s3://rlvr/<name>`` and every Ray host gets ``AWS_ENDPOINT_URL`` and test credentials, as a
  cluster using MinIO or another S3-compatible store would (pyarrow, hence Ray Train, reads them);
- ``head``: ``ray start --head`` (GCS, dashboard/job server on ``http://<head-ip>:8265``; job drivers run here);
- ``w1``, ``w2``, ...: ``ray start --address <head-ip>:6379``, with the custom resources the test gives them.

The test process stays in the root namespace (the "laptop"): it runs ``ray job submit --working-dir .`` against the
head's address and reads results through MLflow only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns import Host, Network

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
GCS_PORT, DASHBOARD_PORT, MLFLOW_PORT, S3_PORT = 6379, 8265, 5000, 9000
BUCKET = "rlvr"


def base_env() -> dict[str, str]:
    """The submitter's and the hosts' environment: this venv first on PATH, no Ray/MLflow settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "PYTEST_", "VIRTUAL_ENV"))}
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def storage_env(storage: Host) -> dict[str, str]:
    """What every Ray host needs to reach the S3-compatible server on ``storage`` (test credentials)."""
    return {
        "AWS_ENDPOINT_URL": f"http://{storage.ip}:{S3_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_filesystem(storage: Host, create_bucket: bool = False) -> Any:
    """The S3 server on ``storage``, as a pyarrow filesystem seen from the submitter."""
    import pyarrow.fs

    env = storage_env(storage)
    return pyarrow.fs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        allow_bucket_creation=create_bucket,
    )


@dataclass
class Cluster:
    network: Network
    head: Host
    workers: dict[str, Host]
    tracking: Host
    storage: Host
    logs: Path
    submitted: list[str] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.tracking.ip}:{MLFLOW_PORT}"

    @property
    def storage_env(self) -> dict[str, str]:
        return storage_env(self.storage)

    def storage_uri(self, name: str) -> str:
        """The run's checkpoint location: a prefix in the S3 bucket, reached over the network by every host."""
        return f"s3://{BUCKET}/{name}"

    def stored_files(self, name: str) -> list[str]:
        """Every object under the run's storage URI (as the submitter lists them over S3)."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{BUCKET}/{name}", recursive=True, allow_not_found=True)
        return [info.path for info in s3_filesystem(self.storage).get_file_info(selector)]

    def diagnostics(self) -> str:
        """Tail of the hosts' Ray logs and the MLflow server log, for an assertion message."""
        parts = []
        for host in [self.head, *self.workers.values()]:
            for log in sorted((host.root / "ray" / "session_latest" / "logs").glob("raylet.out"))[:1]:
                parts.append(f"--- {host.name} {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        for server in ("mlflow", "s3"):
            log = self.logs / f"{server}.log"
            if log.is_file():
                parts.append(f"--- {server} server\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)


def _ray_start(
    network: Network,
    host: Host,
    args: Sequence[str],
    num_cpus: int,
    resources: Mapping[str, float],
    env: Mapping[str, str] | None = None,
    gcs: str | None = None,
) -> None:
    """``gcs``: the cluster's GCS address, exported as RAY_ADDRESS to every process of the node. Hosts share the
    machine's PID namespace, so Ray's own discovery (``address="auto"``: scan the process list for GCS servers)
    would also see Ray instances outside these hosts; RAY_ADDRESS pins it to this cluster."""
    network.run(
        host,
        [
            RAY,
            "start",
            *args,
            "--node-ip-address",
            host.ip,
            "--num-cpus",
            str(num_cpus),
            "--resources",
            json.dumps(dict(resources)),
            "--object-store-memory",
            str(200 * 2**20),
            "--disable-usage-stats",
        ],
        {**base_env(), **(env or {}), "RAY_ADDRESS": gcs or f"{host.ip}:{GCS_PORT}"},
        timeout=240,
    )


def start_head(
    network: Network, host: Host, num_cpus: int, resources: Mapping[str, float], env: Mapping[str, str] | None = None
) -> None:
    """``env``: extra environment of the head's processes (e.g. ``RAY_health_check_*`` for the GCS)."""
    args = [
        "--head",
        "--port",
        str(GCS_PORT),
        "--dashboard-host",
        host.ip,
        "--dashboard-port",
        str(DASHBOARD_PORT),
        "--temp-dir",
        "/tmp/ray",
    ]
    _ray_start(network, host, args, num_cpus, resources, env)


def start_worker(
    network: Network,
    host: Host,
    head: Host,
    num_cpus: int,
    resources: Mapping[str, float],
    env: Mapping[str, str] | None = None,
) -> None:
    gcs = f"{head.ip}:{GCS_PORT}"
    _ray_start(network, host, ["--address", gcs], num_cpus, resources, env, gcs=gcs)


def start_s3(network: Network, host: Host, log: Path) -> subprocess.Popen:
    """moto's S3-compatible server on ``host`` (state in memory), with the bucket the runs use."""
    argv = [str(BIN / "moto_server"), "-H", host.ip, "-p", str(S3_PORT)]
    process = network.popen(host, argv, base_env(), log)
    wait_http(f"http://{host.ip}:{S3_PORT}/", 120, lambda: log.read_text(errors="replace")[-2000:])
    s3_filesystem(host, create_bucket=True).create_dir(BUCKET)
    return process


def start_mlflow(network: Network, host: Host, log: Path) -> subprocess.Popen:
    argv = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        host.ip,
        "--port",
        str(MLFLOW_PORT),
        "--workers",
        "1",
        "--backend-store-uri",
        "sqlite:////tmp/mlflow/mlflow.db",
        "--serve-artifacts",
        "--artifacts-destination",
        "/tmp/mlflow/artifacts",
    ]
    network.run(host, ["mkdir", "-p", "/tmp/mlflow"], base_env(), timeout=30)
    process = network.popen(host, argv, base_env(), log)
    wait_http(f"http://{host.ip}:{MLFLOW_PORT}/health", 120, lambda: log.read_text(errors="replace")[-2000:])
    return process


def wait_http(url: str, timeout_s: float, why: Any) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not up after {timeout_s:.0f}s ({err}):\n{why()}") from None
            time.sleep(1.0)


def wait_nodes(cluster: Cluster, count: int, timeout_s: float = 120) -> None:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [n for n in list_nodes(address=cluster.dashboard) if n.state == "ALIVE"]
        if len(alive) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(alive)} of {count} Ray nodes alive after {timeout_s:.0f}s\n{cluster.diagnostics()}"
            )
        time.sleep(1.0)


@contextmanager
def netns_cluster(
    base: Path,
    head_resources: Mapping[str, float],
    workers: Mapping[str, Mapping[str, float]],
    num_cpus: int = 2,
    head_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """Tracking host, Ray head and one Ray worker host per ``workers`` entry (name -> custom resources).

    Everything (processes, namespaces, bridge) is removed on exit, also when the body or the setup fails."""
    network = Network(base)
    try:
        logs = base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        tracking, storage = network.add_host("tracking"), network.add_host("storage")
        head = network.add_host("head")
        hosts = {name: network.add_host(name) for name in workers}
        start_mlflow(network, tracking, logs / "mlflow.log")
        start_s3(network, storage, logs / "s3.log")
        start_head(network, head, num_cpus, head_resources, {**storage_env(storage), **(head_env or {})})
        for name, resources in workers.items():
            start_worker(network, hosts[name], head, num_cpus, resources, storage_env(storage))
        cluster = Cluster(network, head, hosts, tracking, storage, logs)
        wait_nodes(cluster, 1 + len(workers))
        yield cluster
    finally:
        network.close()


def submit(cluster: Cluster, submission_id: str, entrypoint: Sequence[str]) -> None:
    """``ray job submit --working-dir . --no-wait`` from the root namespace (outside every host)."""
    argv = [
        RAY,
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--working-dir",
        ".",
        "--submission-id",
        submission_id,
        "--no-wait",
        "--",
        *entrypoint,
    ]
    result = subprocess.run(argv, env=base_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"ray job submit failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    cluster.submitted.append(submission_id)


def job_status(cluster: Cluster, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(cluster.dashboard).get_job_status(submission_id).value)


def job_logs(cluster: Cluster, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(cluster.dashboard).get_job_logs(submission_id))


def wait_job(cluster: Cluster, submission_id: str, timeout_s: float) -> str:
    """Wait until the job ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    deadline = time.monotonic() + timeout_s
    while (status := job_status(cluster, submission_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {submission_id} still {status} after {timeout_s:.0f}s:\n"
                f"{job_logs(cluster, submission_id)[-6000:]}\n{cluster.diagnostics()}"
            )
        time.sleep(2.0)
    return status


def main_entrypoint(cluster: Cluster, name: str, *overrides: str) -> list[str]:
    """The test config, with every writable path private to the host that runs it (under its /tmp), checkpoints
    in the storage URI and tracking on the MLflow server. The SFT warm start (keyed by its config) is made once per
    head host and reused by later jobs on it."""
    return [
        sys.executable,
        "-m",
        "rlvr_ray.main",
        "--config-name",
        "train_rlvr_test",
        f"output_dir=/tmp/runs/{name}",
        "warm_start_dir=/tmp/warm_start",
        f"storage_uri={cluster.storage_uri(name)}",
        f"tracking.tracking_uri={cluster.tracking_uri}",
        f"tracking.run_name={name}",
        *overrides,
    ]


def actor_hosts(cluster: Cluster) -> dict[str, set[str]]:
    """Actor class name -> IPs of the hosts its actors ran on (alive or dead: the state API keeps finished ones)."""
    from ray.util.state import list_actors, list_nodes

    ip_of = {node.node_id: node.node_ip for node in list_nodes(address=cluster.dashboard, limit=1000)}
    placed: dict[str, set[str]] = {}
    for actor in list_actors(address=cluster.dashboard, detail=True, limit=10000, raise_on_missing_output=False):
        if actor.node_id:
            placed.setdefault(actor.class_name, set()).add(ip_of.get(actor.node_id, actor.node_id))
    return placed
