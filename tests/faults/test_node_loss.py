"""A whole worker host lost mid-run: every process of the host that runs the rollout actor (its raylet, its Ray
workers, everything in its network namespace) SIGKILLed at once, like a machine losing power. A second worker host
with the same resources takes over the rollout and verifier roles; the learner on the head keeps training.

Asserts from what the run logged to MLflow: the job succeeded, steps 0..N-1 exactly once in the final weights'
lineage with distinct prompts and full batches, a rollout respawn in the recovery metrics, and a final policy that
rlvr_ray.eval loads.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from fault_injection import Victim, check_outcome, find_actor, run_and_inject
from netns_ray import Cluster, actor_hosts, job_logs, netns_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAULT_RUN = ("rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier",
             "training.ppo_steps=40")  # fmt: skip
WORKER = {"rollout": 1, "verifier": 2}
# Detect the lost node within seconds instead of Ray's default ~30 s (the head's GCS health checks).
FAST_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "1000",
}


def rollout_host(cluster: Cluster) -> Victim | None:
    """The worker host that runs the rollout actor (as a victim: the actor's pid, the host's address)."""
    rollout = find_actor(cluster, "Rollout", "lose-host")
    return None if rollout is None else Victim(rollout.pid, rollout.node_ip, "the host of the rollout actor")


def lose_host(cluster: Cluster, victim: Victim) -> None:
    (host,) = [h for h in cluster.workers.values() if h.ip == victim.node_ip]
    cluster.network.kill_host(host)  # SIGKILL every process in its namespace: raylet, workers, agents


def test_worker_host_lost_mid_run(tmp_path: Path) -> None:
    workers = {"w1": WORKER, "w2": WORKER}
    with netns_cluster(tmp_path / "hosts", {"learner": 1}, workers, head_env=FAST_NODE_DEATH) as cluster:
        find, kill = partial(rollout_host, cluster), partial(lose_host, cluster)
        victim, status = run_and_inject(cluster, "lose-host", 1, find, FAULT_RUN, kill)
        logs = job_logs(cluster, "lose-host")
        assert status == "SUCCEEDED", f"job {status} after losing {victim}:\n{logs[-8000:]}\n{cluster.diagnostics()}"
        check_outcome(cluster, "lose-host", tmp_path / "laptop", ["recovery/rollout_respawns"], FAULT_RUN)
        ran_on = actor_hosts(cluster)
        rollout_hosts = set().union(*(ips for cls, ips in ran_on.items() if "Rollout" in cls))
        assert rollout_hosts == {cluster.workers["w1"].ip, cluster.workers["w2"].ip}, ran_on  # replaced elsewhere
