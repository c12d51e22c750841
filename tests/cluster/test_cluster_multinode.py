"""Hosts that share nothing but the network: a Ray head and a Ray worker node, each in its own network and mount
namespace (tests/cluster/netns.py), an MLflow tracking server on a third such host, and the test process outside
all of them submitting `ray job submit --working-dir . -- python -m rlvr_ray.main --config-name train_rlvr_test`
to the head's namespaced address.

Checkpoints go to the storage URI, a bucket on an S3-compatible server on a fourth host; everything a host writes
to disk is private to it. The results reach the submitter through MLflow only: the run, the
eval table, the ledger and the final policy, which rlvr_ray.eval then loads. Ray's state API shows the rollout and
verifier actors on the worker host and the Ray Train worker on the head, as their custom resources say.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_evidence import EVAL_TABLE_ARTIFACT, check_ledger, download, finished_run, load_final_policy, read_ledger
from netns_ray import Cluster, actor_hosts, job_logs, main_entrypoint, netns_cluster, submit, wait_job

from rlvr_ray.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HEAD_RESOURCES = {"learner": 1}  # the "learner group"; job drivers run on the head, as on a KubeRay head
WORKER_RESOURCES = {"rollout": 1, "verifier": 2}  # the "rollout + verifier group"
ROLE_OVERRIDES = ("rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with netns_cluster(tmp_path / "hosts", HEAD_RESOURCES, {"w1": WORKER_RESOURCES}) as running:
        yield running


def test_job_from_outside_trains_on_hosts_sharing_only_the_network(cluster: Cluster, tmp_path: Path) -> None:
    name = "multihost"
    submit(cluster, name, main_entrypoint(cluster, name, *ROLE_OVERRIDES))
    status = wait_job(cluster, name, timeout_s=780)
    logs = job_logs(cluster, name)
    assert status == "SUCCEEDED", f"job {status}:\n{logs[-8000:]}\n{cluster.diagnostics()}"
    assert "held-out greedy exact-answer accuracy (before -> after RL)" in logs

    placed = actor_hosts(cluster)
    worker_ip, head_ip = cluster.workers["w1"].ip, cluster.head.ip
    by_role = {
        role: set().union(*(ips for cls, ips in placed.items() if role in cls))
        for role in ("Rollout", "Verifier", "RayTrainWorker")
    }
    assert by_role == {"Rollout": {worker_ip}, "Verifier": {worker_ip}, "RayTrainWorker": {head_ip}}, placed

    # Private hosts: the run's outputs exist on the head only; the worker host wrote none of them.
    assert (cluster.head.root / "runs" / name).is_dir()
    assert not (cluster.workers["w1"].root / "runs").exists()
    # Checkpoints went to the storage URI (the S3 server's bucket), not to a host's disk.
    stored = cluster.stored_files(name)
    assert any("/step_" in path for path in stored) and any(p.endswith("latest.json") for p in stored), stored

    # Everything the laptop needs, through MLflow only.
    laptop = tmp_path / "laptop"
    run = finished_run(cluster.tracking_uri, name)
    cfg = load_config("train_rlvr_test", list(ROLE_OVERRIDES))
    check_ledger(read_ledger(cluster.tracking_uri, run.info.run_id, laptop), cfg)
    table = download(cluster.tracking_uri, run.info.run_id, EVAL_TABLE_ARTIFACT, laptop).read_text()
    assert "before" in table and "after" in table
    assert "eval/accuracy" in run.data.metrics and "reward/mean" in run.data.metrics
    load_final_policy(cluster.tracking_uri, run.info.run_id, laptop)
