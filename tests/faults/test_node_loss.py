"""Whole hosts lost mid-run: every process of a host (its raylet, its Ray workers, everything in its network
namespace) SIGKILLed at once, like a machine losing power.

- A worker host (the one running the rollout actor): a second worker host with the same resources takes over the
  rollout and verifier roles; the learner on the head keeps training, and the job succeeds.
- The head host: the job dies with it (its driver runs there, and Ray keeps no state without its GCS). A new head
  (fresh private disk) and worker come up, the same job is submitted again, and it resumes from the storage URI.

Asserts from what the runs logged to MLflow: steps 0..N-1 exactly once in the final weights' lineage with distinct
prompts and full batches, the recovery (a rollout respawn; steps before the checkpoint logged once), and a final
policy that rlvr_ray.eval loads.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
from fault_injection import RUN_TIMEOUT_S, Victim, check_outcome, find_actor, run_and_inject
from netns_evidence import client, wait_for_step
from netns_ray import (
    Cluster,
    actor_hosts,
    job_logs,
    main_entrypoint,
    netns_cluster,
    start_head,
    start_worker,
    submit,
    wait_job,
    wait_nodes,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAULT_RUN = ("rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier",
             "training.ppo_steps=40")  # fmt: skip
WORKER = {"rollout": 1, "verifier": 2}
CHECKPOINT_EVERY = 3  # train_rlvr_test's training.checkpoint_every
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


def test_head_host_lost_then_resubmitted_to_a_new_head_resumes(tmp_path: Path) -> None:
    name = "lose-head"
    with netns_cluster(tmp_path / "hosts", {"learner": 1}, {"w1": WORKER}) as cluster:
        submit(cluster, name, main_entrypoint(cluster, name, *FAULT_RUN))
        # Once step CHECKPOINT_EVERY is logged, its checkpoint is in the storage URI.
        wait_for_step(cluster.tracking_uri, name, CHECKPOINT_EVERY, RUN_TIMEOUT_S, lambda: job_logs(cluster, name))
        for host in [cluster.head, *cluster.workers.values()]:  # the head, then the workers its loss takes down
            cluster.network.kill_host(host)
        for private in ("runs", "warm_start", "ray"):  # a new head pod: nothing of the old one's disk is left
            shutil.rmtree(cluster.head.root / private, ignore_errors=True)
        start_head(cluster.network, cluster.head, 2, {"learner": 1}, cluster.storage_env)
        start_worker(cluster.network, cluster.workers["w1"], cluster.head, 2, WORKER, cluster.storage_env)
        wait_nodes(cluster, 2)
        again = f"{name}-again"
        submit(cluster, again, main_entrypoint(cluster, name, *FAULT_RUN))  # the same job, to the new head
        status = wait_job(cluster, again, RUN_TIMEOUT_S)
        logs = job_logs(cluster, again)
        assert status == "SUCCEEDED", f"resubmitted job {status}:\n{logs[-8000:]}\n{cluster.diagnostics()}"
        assert f"[run] resuming /tmp/runs/{name} from its step-" in logs, logs[-4000:]
        facts = check_outcome(cluster, name, tmp_path / "laptop", [], FAULT_RUN)
        mlflow = client(cluster.tracking_uri)
        logged = [m.step for run_id in facts["run_ids"] for m in mlflow.get_metric_history(run_id, "reward/mean")]
        # Resumed, not restarted: the steps before the first checkpoint were trained (and logged) once in all runs.
        assert [logged.count(step) for step in range(CHECKPOINT_EVERY)] == [1] * CHECKPOINT_EVERY, sorted(logged)
        assert len(facts["run_ids"]) == 2, facts["run_ids"]  # the lost job's run and the resumed one
