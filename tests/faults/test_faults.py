"""Faults survived, nothing lost: real processes of a running `ray job submit` job SIGKILLed by pid mid-run, on the
multi-host harness (a Ray head with the learner resource and a worker host with the rollout and verifier resources,
each in its own network and mount namespace; see tests/cluster/netns.py). The four tests share one cluster.

Each test asserts, from what the run logged to MLflow: the job succeeded; the ledger of the final weights has
steps 0..N-1 exactly once, each on the prompts an uninterrupted run trains on at that step, with a full batch of
samples never reused; the recovery metric of the injected fault is > 0; and the final policy, downloaded through
MLflow, loads in rlvr_ray.eval.

The test config's RL steps take ~0.1 s on this machine, so these runs have 40 steps (the kill lands with dozens of
steps to go) and the victim's pid is found through the state API before the kill step comes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fault_injection import check_outcome, find_actor, find_driver, run_and_inject
from netns_evidence import client
from netns_ray import Cluster, job_logs, main_entrypoint, netns_cluster, submit, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAULT_RUN = ("rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier",
             "training.ppo_steps=40")  # fmt: skip
CHECKPOINT_EVERY = 3  # train_rlvr_test's training.checkpoint_every


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("faults")
    with netns_cluster(base, {"learner": 1}, {"w1": {"rollout": 1, "verifier": 2}}, num_cpus=3) as running:
        yield running


def _succeeded(cluster: Cluster, name: str, status: str) -> None:
    assert status == "SUCCEEDED", f"job {status}:\n{job_logs(cluster, name)[-8000:]}\n{cluster.diagnostics()}"


def test_rollout_actor_killed_is_replaced(cluster: Cluster, tmp_path: Path) -> None:
    name = "kill-rollout"
    victim, status = run_and_inject(cluster, name, 1, partial(find_actor, cluster, "Rollout", name), FAULT_RUN)
    _succeeded(cluster, name, status)
    check_outcome(cluster, name, tmp_path, ["recovery/rollout_respawns"], FAULT_RUN)
    assert "[rollout] actor 0 died or hung; respawned it" in job_logs(cluster, name), f"no log line after {victim}"


def test_verifier_actor_killed_is_replaced(cluster: Cluster, tmp_path: Path) -> None:
    name = "kill-verifier"
    # One verifier, so the one killed is the one that scores next: with one rollout actor the streamed scoring sends
    # every share to the pool's first verifier, and a dead second one would go unnoticed (nothing to recover).
    run = (*FAULT_RUN, "verifier.num_actors=1")
    _, status = run_and_inject(cluster, name, 1, partial(find_actor, cluster, "Verifier", name), run)
    _succeeded(cluster, name, status)
    check_outcome(cluster, name, tmp_path, ["recovery/verifier_respawns", "verify/respawns"], run)
    assert "[verifier] actor 0 died, hung or failed; respawned it" in job_logs(cluster, name)


def test_learner_worker_killed_restarts_from_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    name = "kill-learner"
    # Once step CHECKPOINT_EVERY is logged, a checkpoint is in the storage URI to restart from.
    find = partial(find_actor, cluster, "RayTrainWorker", name)
    _, status = run_and_inject(cluster, name, CHECKPOINT_EVERY, find, FAULT_RUN)
    _succeeded(cluster, name, status)
    check_outcome(cluster, name, tmp_path, ["recovery/learner_restarts"], FAULT_RUN)


def test_driver_killed_then_resubmitted_resumes_from_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    name = "kill-driver"
    _, first = run_and_inject(cluster, name, CHECKPOINT_EVERY, partial(find_driver, cluster, name), FAULT_RUN)
    assert first == "FAILED", f"job with a killed driver ended {first}"
    # The resubmitted driver must resume from the storage URI alone: drop what the first one left on the head.
    private = cluster.head.root / "runs" / name
    assert private.is_dir()
    shutil.rmtree(private)

    again = f"{name}-again"
    submit(cluster, again, main_entrypoint(cluster, name, *FAULT_RUN))  # the same job, resubmitted
    _succeeded(cluster, again, wait_job(cluster, again, 600))
    facts = check_outcome(cluster, name, tmp_path, [], FAULT_RUN)
    # Resumed, not restarted: the steps before the first checkpoint were trained (and logged) once in all runs.
    mlflow = client(cluster.tracking_uri)
    logged = [m.step for run_id in facts["run_ids"] for m in mlflow.get_metric_history(run_id, "reward/mean")]
    assert [logged.count(step) for step in range(CHECKPOINT_EVERY)] == [1] * CHECKPOINT_EVERY, sorted(logged)
