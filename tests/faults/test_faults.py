"""Faults survived, nothing lost: real processes of a running `ray job submit` job SIGKILLed by pid mid-run, on the
multi-host harness (a Ray head with the learner resource and a worker host with the rollout and verifier resources,
each in its own network and mount namespace; see tests/cluster/netns.py).

Each test asserts, from what the run logged to MLflow: the job succeeded; the ledger of the final weights has
steps 0..N-1 exactly once, each on a distinct prompt set with a full batch of samples; the recovery metric of the
injected fault is > 0; and the final policy, downloaded through MLflow, loads in rlvr_ray.eval.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_injection import RUN_TIMEOUT_S, check_outcome, kill_actor, kill_driver, run_and_inject
from netns_evidence import client, wait_for_step
from netns_ray import Cluster, job_logs, job_status, main_entrypoint, netns_cluster, submit, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROLES = ("rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier")
FAULT_STEP = 2  # inject once steps 0..2 are logged: mid-run of the test config's 6 steps


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("faults")
    with netns_cluster(base, {"learner": 1}, {"w1": {"rollout": 1, "verifier": 2}}, num_cpus=3) as running:
        yield running


def _succeeded(cluster: Cluster, name: str, status: str) -> None:
    assert status == "SUCCEEDED", f"job {status}:\n{job_logs(cluster, name)[-8000:]}\n{cluster.diagnostics()}"


def test_rollout_actor_killed_is_replaced(cluster: Cluster, tmp_path: Path) -> None:
    victim, status = run_and_inject(cluster, "kill-rollout", FAULT_STEP, lambda: kill_actor(cluster, "Rollout"), ROLES)
    _succeeded(cluster, "kill-rollout", status)
    check_outcome(cluster, "kill-rollout", tmp_path, ["recovery/rollout_respawns"])
    assert "respawn" in job_logs(cluster, "kill-rollout").lower(), f"no log line for the respawn of {victim}"


def test_verifier_actor_killed_is_replaced(cluster: Cluster, tmp_path: Path) -> None:
    _, status = run_and_inject(cluster, "kill-verifier", FAULT_STEP, lambda: kill_actor(cluster, "Verifier"), ROLES)
    _succeeded(cluster, "kill-verifier", status)
    check_outcome(cluster, "kill-verifier", tmp_path, ["recovery/verifier_respawns", "verify/respawns"])


def test_learner_worker_killed_restarts_from_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    # After step 3 is logged, the step-3 checkpoint (checkpoint_every=3) is in the storage URI.
    _, status = run_and_inject(cluster, "kill-learner", 3, lambda: kill_actor(cluster, "RayTrainWorker"), ROLES)
    _succeeded(cluster, "kill-learner", status)
    check_outcome(cluster, "kill-learner", tmp_path, ["recovery/learner_restarts"])


def test_driver_killed_then_resubmitted_resumes_from_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    name, entrypoint = "kill-driver", main_entrypoint(cluster, "kill-driver", *ROLES)
    submit(cluster, name, entrypoint)
    wait_for_step(cluster.tracking_uri, name, 3, RUN_TIMEOUT_S, lambda: job_status(cluster, name))
    kill_driver(cluster, name)
    first = wait_job(cluster, name, RUN_TIMEOUT_S)
    assert first == "FAILED", f"job with a killed driver ended {first}"

    submit(cluster, f"{name}-again", entrypoint)  # the same job, resubmitted (a new submission id)
    _succeeded(cluster, f"{name}-again", wait_job(cluster, f"{name}-again", RUN_TIMEOUT_S))
    facts = check_outcome(cluster, name, tmp_path, [])
    # Resumed, not restarted: steps before the checkpoint were trained (and logged) once in all runs of that name.
    mlflow = client(cluster.tracking_uri)
    logged = [m.step for run_id in facts["run_ids"] for m in mlflow.get_metric_history(run_id, "reward/mean")]
    assert [logged.count(step) for step in range(3)] == [1, 1, 1], f"steps logged: {sorted(logged)}"
