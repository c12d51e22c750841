"""python -m rlvr_ray.cluster check: accepts the shipped manifests (rendered by `kubectl kustomize`) with their
configs, rejects mismatched pairs with a message naming the role and the missing resource, rejects configs that would
break on a cluster (storage, tracking), and reads group capacities as KubeRay/Ray do."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml
from cluster_helpers import CLUSTER, KUSTOMIZATIONS, one, rendered

from rlvr_ray.cluster.__main__ import main
from rlvr_ray.cluster.check import (
    ClusterShape,
    ManifestError,
    NodeGroup,
    check_plan,
    entrypoint_command,
    group_capacity,
    parse_quantity,
    shape_of,
    worker_nodes,
)
from rlvr_ray.config import load_config
from rlvr_ray.placement import placement_plan

# Each overlay with the config it is made for (the RayCluster has no entrypoint, so it needs one named).
SHIPPED_PAIRS = [
    ("base", ["--config-name", "train_rlvr_model", "rollout.resource=rollout", "verifier.resource=verifier",
              "learner.resource=learner", "storage_uri=s3://bucket/runs"]),
    ("overlays/gpu", ["--config-name", "train_rlvr_large"]),
    ("overlays/cpu-local", ["--config-name", "cluster_cpu_local"]),
    ("overlays/rwx", ["--config-name", "train_rlvr_model", "rollout.resource=rollout", "verifier.resource=verifier",
                      "learner.resource=learner", "storage_uri=/mnt/rlvr/checkpoints"]),
]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("kustomization", "config_args"), SHIPPED_PAIRS)
def test_shipped_manifests_fit_their_configs(
    kustomization: str, config_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / kustomization), *config_args)
    assert code == 0, out
    assert out.count(": OK") == 3, "the RayCluster and both RayJobs"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjobs_fit_the_configs_their_entrypoints_run(kustomization: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / kustomization))
    assert code == 0, out
    assert "RayJob/rlvr-train (entrypoint config" in out and "RayJob/rlvr-sweep" in out
    assert "skipped" in out and "RayCluster/rlvr" in out


def test_gpu_config_on_the_laptop_cluster_names_the_missing_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/cpu-local"), "--config-name", "train_rlvr_large")
    assert code == 1
    assert "CANNOT PLACE" in out
    assert "rollout actor needs resource 'GPU' (1) but no worker group provides it; groups: head" in out
    assert "learner worker needs resource 'GPU' (1)" in out


def test_unknown_role_resource_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/gpu"), "--config-name", "train_rlvr_large",
                           "verifier.resource=scorer")
    assert code == 1
    assert "verifier actor needs resource 'scorer' (1) but no worker group provides it" in out


def test_too_many_actors_for_the_node_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/gpu"), "--config-name", "train_rlvr_large",
                           "rollout.num_actors=5")
    assert code == 1
    assert "rollout: only 4 of 5 rollout actors fit" in out and "raise maxReplicas" in out


def test_actor_bigger_than_any_node(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/gpu"), "--config-name", "train_rlvr_large",
                           "learner.num_cpus=16")
    assert code == 1
    assert "learner worker needs CPU 16, GPU 1, learner 1 on one node but no group's node offers all of that" in out


def test_rendered_file_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text = yaml.safe_dump_all(rendered("overlays/cpu-local"))
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(text)
    assert run_cli(capsys, str(manifest), "--config-name", "cluster_cpu_local")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert run_cli(capsys, "-", "--config-name", "train_rlvr_large")[0] == 1


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--config-name", "train_rlvr_test"], "cannot read"),
        ("a: [unclosed", ["--config-name", "train_rlvr_test"], "not valid YAML"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", ["--config-name", "train_rlvr_test"], "no RayCluster"),
        ("RAYCLUSTER", ["--config-name", "no_such_config"], "config 'no_such_config' not found"),
        ("RAYCLUSTER", [], "nothing to check: pass --config-name"),
        ("RAYCLUSTER", ["--config-name", "train_rlvr_test", "training.batch_size=7"], "batch_size"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, args: list[str], message: str
) -> None:
    manifest = tmp_path / "manifest.yaml"
    if content == "RAYCLUSTER":
        content = yaml.safe_dump(one(rendered("base"), "RayCluster", "rlvr"))
    if content is not None:
        manifest.write_text(content)
    code, _, err = run_cli(capsys, str(manifest), *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


# ----------------------------------------------------------------------------------------------------------------
# Reading capacities


def group(limits: dict | None = None, requests: dict | None = None, **fields: object) -> dict:
    resources = {key: value for key, value in (("limits", limits), ("requests", requests)) if value}
    spec = {"groupName": "g", "minReplicas": 0, "maxReplicas": 3, "rayStartParams": {},
            "template": {"spec": {"containers": [{"name": "ray", "image": "x", "resources": resources}]}}}
    spec.update(fields)
    return spec


def test_capacity_from_container_limits_rounds_up_like_kuberay() -> None:
    assert group_capacity(group({"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": "2"}), "g", True) == {
        "CPU": 2.0, "GPU": 2.0}
    assert group_capacity(group(None, {"cpu": "3"}), "g", True) == {"CPU": 3.0}


def test_capacity_from_ray_start_params_and_group_resources() -> None:
    params = {"num-cpus": "6", "num-gpus": "1", "resources": '"{\\"rollout\\": 2}"'}
    assert group_capacity(group({"cpu": "2"}, rayStartParams=params), "g", True) == {
        "CPU": 6.0, "GPU": 1.0, "rollout": 2.0}
    # The group's `resources` field wins and is the only source of custom resources.
    both = group({"cpu": "2"}, rayStartParams=params, resources={"CPU": "4", "learner": "1"})
    assert group_capacity(both, "g", True) == {"CPU": 4.0, "GPU": 1.0, "learner": 1.0}


def test_resources_json_the_autoscaler_cannot_parse_is_reported() -> None:
    plain_json = group({"cpu": "2"}, rayStartParams={"resources": '{"rollout": 1}'})
    with pytest.raises(ManifestError, match="form the Ray autoscaler parses"):
        group_capacity(plain_json, "g", autoscaling=True)
    assert group_capacity(plain_json, "g", autoscaling=False)["rollout"] == 1.0  # KubeRay alone trims leniently


def test_node_counts() -> None:
    assert worker_nodes(group(replicas=1, minReplicas=1, maxReplicas=5), autoscaling=True) == 5
    assert worker_nodes(group(replicas=9, minReplicas=1, maxReplicas=5), autoscaling=False) == 5
    assert worker_nodes(group(minReplicas=2, maxReplicas=5), autoscaling=False) == 2
    assert worker_nodes(group(maxReplicas=2, numOfHosts=4), autoscaling=True) == 8
    assert worker_nodes(group(maxReplicas=2, suspend=True), autoscaling=True) == 0


def test_quantities() -> None:
    assert parse_quantity("250m") == 0.25
    assert parse_quantity(4) == 4
    assert parse_quantity("1Gi") == 2**30
    with pytest.raises(ManifestError):
        parse_quantity("lots")


def test_train_controller_lands_on_a_zero_cpu_head() -> None:
    shape = ClusterShape("t", (NodeGroup("head", {"CPU": 0.0}, 1, is_head=True), NodeGroup("w", {"CPU": 8.0}, 2)))
    result = check_plan(placement_plan(load_config("train_rlvr_test")), shape)
    assert result.ok, result.problems
    assert result.placed["train_controller"] == {"head": 1}
    assert "head" not in result.placed["rollout"]


def test_cpu_actors_avoid_gpu_nodes_when_cpu_nodes_can_take_them() -> None:
    cluster = copy.deepcopy(one(rendered("overlays/gpu"), "RayCluster", "rlvr")["spec"])
    result = check_plan(placement_plan(load_config("train_rlvr_test")), shape_of("gpu", cluster))
    assert result.ok
    assert set(result.nodes_used) == {"head", "verifier"}


def test_entrypoint_parsing() -> None:
    command = entrypoint_command("python -m rlvr_ray.main --config-name x a.b=1 --dry-run c=2")
    assert command == ("rlvr_ray.main", "x", ["a.b=1", "c=2"], {"--dry-run": ""})
    command = entrypoint_command("python -m rlvr_ray.tune --config-name=y --resume --sweep /app/s.yaml k=v")
    assert command == ("rlvr_ray.tune", "y", ["k=v"], {"--resume": "", "--sweep": "/app/s.yaml"})
    assert entrypoint_command("python train.py") is None
    assert entrypoint_command("python -m other.module --config-name x") is None


# ----------------------------------------------------------------------------------------------------------------
# Sweeps


def test_sweep_rayjobs_are_sized_for_their_concurrent_trials(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/cpu-local"))
    assert code == 0, out
    assert "RayJob/rlvr-sweep (entrypoint config cluster_cpu_local; sweep reward_weights, 2 trials at once): OK" in out
    assert "rollout x2 -> rollout (2)" in out


def test_a_sweep_too_wide_for_the_slots_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    """The laptop groups have two slots per role: two concurrent trials fit, a third does not."""
    cluster = one(rendered("overlays/cpu-local"), "RayCluster", "rlvr")
    shape = shape_of("RayCluster/rlvr", cluster["spec"])
    from rlvr_ray.cluster.__main__ import sized_for_sweep
    from rlvr_ray.placement import sweep_plan

    plan, label = sized_for_sweep(load_config("cluster_cpu_local"), "/app/configs/sweeps/reward_weights.yaml")
    assert label == "sweep reward_weights, 2 trials at once"
    assert check_plan(plan, shape).ok
    trial = next(r for r in plan.roles if r.role == "rollout")
    assert trial.count == 2 and trial.num_cpus == 0.5, "the sweep's trial_resources size each trial"
    wider = sweep_plan(placement_plan(load_config("cluster_cpu_local", ["rollout.num_cpus=0.5"])), 3, 0.0)
    problems = check_plan(wider, shape).problems
    assert any(p.startswith("rollout: only 2 of 3 rollout actors fit") for p in problems)
    code, out, _ = run_cli(capsys, str(CLUSTER / "overlays/cpu-local"), "--config-name", "cluster_cpu_local",
                           "--sweep", "reward_weights")
    assert code == 0 and out.count("sweep reward_weights, 2 trials at once): OK") == 3


@pytest.mark.parametrize(
    ("params", "message"),
    [({"num-cpus": "four"}, "bad value in cluster spec"), ({"resources": '"[1, 2]"'}, "not a JSON object of numbers")],
)
def test_malformed_groups_are_one_line_errors(params: dict, message: str) -> None:
    spec = {"headGroupSpec": group({"cpu": "1"}), "workerGroupSpecs": [group({"cpu": "1"}, rayStartParams=params)]}
    with pytest.raises(ManifestError, match=message):
        shape_of("RayCluster/x", spec)
