"""Kill real processes of a running job by pid (SIGKILL, no warning), found through Ray's state API, and check what
the run logged afterwards (through MLflow only).

Hosts share no PID namespace with the test process, only network and mount namespaces differ, so a pid the state
API reports is a pid of this machine.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns_evidence import (
    check_ledger,
    finished_run,
    load_final_policy,
    metric_values,
    read_ledger,
    runs_named,
    wait_for_step,
)
from netns_ray import Cluster, job_logs, job_status, main_entrypoint, submit, wait_job

from rlvr_ray.config import load_config

RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Victim:
    pid: int
    node_ip: str
    what: str


def alive_actors(cluster: Cluster, class_part: str, submission_id: str) -> list[Victim]:
    """ALIVE actors of that job whose class name contains ``class_part``, with their pid and host address (actors of
    an earlier job on the same cluster may still be alive for a moment after it ends)."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors, list_nodes

    job_id = JobSubmissionClient(cluster.dashboard).get_job_info(submission_id).job_id
    if job_id is None:
        return []
    ip_of = {node.node_id: node.node_ip for node in list_nodes(address=cluster.dashboard, limit=1000)}
    actors = list_actors(
        address=cluster.dashboard,
        filters=[("state", "=", "ALIVE")],
        detail=True,
        limit=10000,
        raise_on_missing_output=False,
    )
    return [
        Victim(int(a.pid), ip_of.get(a.node_id, "?"), f"{a.class_name} {a.actor_id[:12]}")
        for a in actors
        if class_part in a.class_name and a.pid and a.job_id == job_id
    ]


def sigkill(victim: Victim) -> Victim:
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{victim.pid}").exists() and _state(victim.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    return victim


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def find_actor(cluster: Cluster, class_part: str, submission_id: str) -> Victim | None:
    """One live actor of that class (the first the state API lists), or None while there is none."""
    victims = alive_actors(cluster, class_part, submission_id)
    return victims[0] if victims else None


def find_driver(cluster: Cluster, submission_id: str) -> Victim | None:
    """The job's driver process (``python -m rlvr_ray.main`` on the head), once it has connected to Ray."""
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(cluster.dashboard).get_job_info(submission_id)
    if info.driver_info is None or not info.driver_info.pid:
        return None
    return Victim(int(info.driver_info.pid), info.driver_info.node_ip_address, "job driver")


def run_and_inject(
    cluster: Cluster,
    name: str,
    at_step: int,
    find: Callable[[], Victim | None],
    overrides: Sequence[str],
    kill: Callable[[Victim], Any] = sigkill,
) -> tuple[Victim, str]:
    """Submit the test config, find the victim as soon as it exists, SIGKILL it as soon as step ``at_step`` is
    logged (the tiny config's RL steps take ~0.1 s, so the state API is asked before, not after); returns the
    victim and the job's final status."""
    submit(cluster, name, main_entrypoint(cluster, name, *overrides))
    explain = lambda: f"{job_status(cluster, name)}\n{job_logs(cluster, name)[-6000:]}"  # noqa: E731
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (victim := find()) is None:
        assert time.monotonic() < deadline, f"no victim for {name} within {RUN_TIMEOUT_S}s: {explain()}"
        time.sleep(0.5)
    wait_for_step(cluster.tracking_uri, name, at_step, RUN_TIMEOUT_S, explain)
    kill(victim)
    return victim, wait_job(cluster, name, RUN_TIMEOUT_S)


def check_outcome(
    cluster: Cluster, name: str, laptop: Path, recovery_metrics: Sequence[str], overrides: Sequence[str]
) -> dict[str, Any]:
    """The run finished with every step trained exactly once in the final weights' lineage, the recovery shows in
    its metrics, and its final policy loads; returns the facts for further checks."""
    run = finished_run(cluster.tracking_uri, name)
    check_ledger(
        read_ledger(cluster.tracking_uri, run.info.run_id, laptop), load_config("train_rlvr_test", list(overrides))
    )
    run_ids = [r.info.run_id for r in runs_named(cluster.tracking_uri, name)]
    if recovery_metrics:  # a resubmitted job shows its recovery in the ledger and logged steps instead
        recoveries = metric_values(cluster.tracking_uri, run_ids, recovery_metrics)
        assert recoveries and max(recoveries) > 0, f"no recovery in metrics {list(recovery_metrics)}: {recoveries}"
    load_final_policy(cluster.tracking_uri, run.info.run_id, laptop)
    return {"run": run, "run_ids": run_ids}
