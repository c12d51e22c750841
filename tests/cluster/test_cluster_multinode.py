"""Multi-node placement for real on one machine: a Ray head and a second Ray node with different custom resources
(like two KubeRay worker groups), the test config submitted with `ray job submit` and its role overrides, then
Ray's state API shows the rollout actors on one node and the Ray Train workers on the other.

Everything binds to 127.0.0.1 on free ports with a private --temp-dir; both nodes are stopped by killing exactly
the processes of that temp dir (never `ray stop`, which would stop other Ray instances on the machine).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_nodes import main_entrypoint, start_head, start_worker, stop_nodes, submit_job

pytestmark = pytest.mark.slow

HEAD_RESOURCES = {"learner": 1}  # the "learner group"; the job driver runs here too, as on a KubeRay head
WORKER_RESOURCES = {"rollout": 1, "verifier": 2}  # the "rollout + verifier group"
ROLE_OVERRIDES = ["rollout.resource=rollout", "learner.resource=learner", "verifier.resource=verifier"]


@pytest.fixture
def two_node_cluster() -> Iterator[dict[str, str]]:
    """A head (resource `learner`) and a second node (`rollout`, `verifier`), both on 127.0.0.1."""
    temp_dir = tempfile.mkdtemp(prefix="rlvr-mn-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    try:
        dashboard, gcs = start_head(temp_dir, HEAD_RESOURCES)
        start_worker(gcs, WORKER_RESOURCES)
        yield {"dashboard": dashboard, "temp_dir": temp_dir}
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
    entrypoint = main_entrypoint(tmp_path, *ROLE_OVERRIDES)
    job = submit_job(cluster["dashboard"], entrypoint, timeout=1100)
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
