"""cluster/: every rendered manifest is schema-valid, safe by default, consistent with the project and runnable.

KubeRay objects are validated against the v1 openAPIV3Schema of the RayCluster/RayJob CRDs vendored in
tests/cluster/crds (closed: unknown fields fail), core objects with kubernetes-validate (strict). Rendering is real
kustomize: `kubectl kustomize DIR`.
"""

from __future__ import annotations

import importlib.util
import re

import kubernetes_validate
import pytest
from cluster_helpers import (
    IMAGE_APP_DIR,
    KUSTOMIZATIONS,
    REPO,
    all_manifest_docs,
    by_kind,
    crd_errors,
    one,
    pod_specs,
    pyproject,
    ray_cluster_specs,
    rendered,
)

from rlvr_ray.cluster.check import entrypoint_command, group_capacity
from rlvr_ray.config import load_config

KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
ROLES = {"rollout", "learner", "verifier"}
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _docs_of(kind: str | None = None) -> list[tuple[str, dict]]:
    return [(label, doc) for label, doc in all_manifest_docs() if kind is None or doc["kind"] == kind]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kuberay_objects_match_the_crd_schemas(kustomization: str) -> None:
    docs = rendered(kustomization)
    ray_docs = by_kind(docs, "RayCluster") + by_kind(docs, "RayJob")
    assert {doc["kind"] for doc in ray_docs} == {"RayCluster", "RayJob"}
    for doc in ray_docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert crd_errors(doc) == []


def test_core_objects_match_the_kubernetes_schemas() -> None:
    core = [(label, doc) for label, doc in _docs_of() if doc["kind"] not in ("RayCluster", "RayJob")]
    assert {doc["kind"] for _, doc in core} >= {"Namespace", "PersistentVolumeClaim", "Deployment", "Service",
                                                "NetworkPolicy", "ConfigMap", "Pod"}
    for label, doc in core:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{label} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): {err.message}")


def test_crd_validation_rejects_typos_and_wrong_types() -> None:
    cluster = one(rendered("overlays/gpu"), "RayCluster", "rlvr")
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    cluster["spec"]["workerGroupSpecs"][1]["rayStartParams"] = {"num-cpus": 4}
    errors = "\n".join(crd_errors(cluster))
    assert "'maxReplica' was unexpected" in errors
    assert "4 is not of type 'string'" in errors


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjobs_embed_the_rayclusters_spec_and_clean_up(kustomization: str) -> None:
    docs = rendered(kustomization)
    cluster = one(docs, "RayCluster", "rlvr")
    jobs = by_kind(docs, "RayJob")
    assert {job["metadata"]["name"] for job in jobs} == {"rlvr-train", "rlvr-sweep"}
    for job in jobs:
        assert job["spec"]["rayClusterSpec"] == cluster["spec"], "the overlay must re-run the replacement"
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        assert job["spec"]["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_each_worker_group_carries_its_role_resource(kustomization: str) -> None:
    cluster = one(rendered(kustomization), "RayCluster", "rlvr")
    spec = cluster["spec"]
    groups = spec["workerGroupSpecs"]
    assert {group["groupName"] for group in groups} == ROLES
    for group in groups:
        capacity = group_capacity(group, group["groupName"], spec.get("enableInTreeAutoscaling", False))
        custom = set(capacity) - {"CPU", "GPU"}
        assert custom == {group["groupName"]}, f"group {group['groupName']} advertises {custom}"
        assert 0 <= group["minReplicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1
    head_params = spec["headGroupSpec"]["rayStartParams"]
    assert head_params["num-cpus"] == "0", "actors must not land on the head"


def test_gpu_overlay_puts_rollout_and_learner_on_gpus_and_autoscales() -> None:
    spec = one(rendered("overlays/gpu"), "RayCluster", "rlvr")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpus = {g["groupName"]: group_capacity(g, g["groupName"], True).get("GPU", 0) for g in spec["workerGroupSpecs"]}
    assert gpus == {"rollout": 1, "learner": 1, "verifier": 0}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0, "GPU nodes scale to zero when idle"


def test_ray_version_matches_the_pinned_ray() -> None:
    pins = [dep for dep in pyproject()["project"]["dependencies"] if dep.startswith("ray[")]
    version = pins[0].split("==")[1]
    for kustomization in KUSTOMIZATIONS:
        for _, spec in ray_cluster_specs(one(rendered(kustomization), "RayCluster", "rlvr")):
            assert spec["rayVersion"] == version


def test_images_carry_the_project_version() -> None:
    version = pyproject()["project"]["version"]
    for label, doc in _docs_of():
        for where, pod in pod_specs(doc):
            for container in pod["containers"]:
                tag = container["image"].rsplit(":", 1)[1]
                assert tag.startswith(version), f"{label} {where}: image {container['image']} is not {version}"
    gpu_images = {c["image"] for _, p in pod_specs(one(rendered("overlays/gpu"), "RayJob", "rlvr-train"))
                  for c in p["containers"]}
    assert gpu_images == {f"rlvr-ray:{version}-gpu"}, "every pod of a GPU cluster runs the same (GPU) image"


# ----------------------------------------------------------------------------------------------------------------
# Safe by default


def test_pods_run_as_non_root_with_limits() -> None:
    for label, doc in _docs_of():
        for where, pod in pod_specs(doc):
            context = pod.get("securityContext", {})
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) > 0, f"{label} {where}"
            assert not pod.get("hostNetwork") and not pod.get("hostPID")
            assert not any("hostPath" in volume for volume in pod.get("volumes", [])), f"{label} {where}"
            for container in pod["containers"]:
                limits = container.get("resources", {}).get("limits", {})
                assert {"cpu", "memory"} <= set(limits), f"{label} {where} {container['name']}: limits {limits}"
                security = container.get("securityContext", {})
                assert security.get("allowPrivilegeEscalation") is False, f"{label} {where} {container['name']}"
                assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{label} {where}"
                assert not security.get("privileged")
                assert not any("hostPort" in port for port in container.get("ports", []))


def test_autoscaler_sidecar_is_limited_and_non_root() -> None:
    for label, doc in _docs_of():
        for where, spec in ray_cluster_specs(doc):
            if spec.get("enableInTreeAutoscaling"):
                options = spec["autoscalerOptions"]
                assert {"cpu", "memory"} <= set(options["resources"]["limits"]), f"{label} {where}"
                assert options["securityContext"]["runAsNonRoot"] is True


def test_nothing_is_published_outside_the_cluster() -> None:
    docs = _docs_of()
    assert not [doc for _, doc in docs if doc["kind"] in ("Ingress", "Gateway", "HTTPRoute")]
    for label, doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{label} Service/{doc['metadata']['name']}"
        for where, spec in ray_cluster_specs(doc):
            head = spec["headGroupSpec"]
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{label} {where}"
            assert not head.get("enableIngress")


def _env_vars(doc: dict) -> list[tuple[str, dict]]:
    return [(where, env) for where, pod in pod_specs(doc) for c in pod["containers"] for env in c.get("env", [])]


def test_credentials_only_come_from_secrets() -> None:
    for label, doc in _docs_of():
        assert doc["kind"] != "Secret", f"{label}: Secrets are created by hand, never shipped"
        for where, env in _env_vars(doc):
            literal = str(env.get("value", ""))
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", literal), f"{label} {where} {env['name']}: password in URI"
            if SECRET_LIKE.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{label} {where}: {env['name']} not from a Secret"
    mlflow = one(rendered("overlays/gpu"), "Deployment", "rlvr-mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    backend = next(env for env in container["env"] if env["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert backend["valueFrom"]["secretKeyRef"]["name"] == "rlvr-mlflow-db"
    assert container["envFrom"] == [{"secretRef": {"name": "rlvr-s3-credentials"}}]


# What backs /mnt/rlvr (the images' working directory) in the Ray pods, and the access mode of the claim rlvr-data.
STORAGE = {
    "base": ("emptyDir", None),
    "overlays/gpu": ("emptyDir", None),
    "overlays/rwx": ("persistentVolumeClaim", ["ReadWriteMany"]),
    "overlays/cpu-local": ("persistentVolumeClaim", ["ReadWriteOnce"]),
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_only_the_rwx_overlay_needs_a_shared_volume(kustomization: str) -> None:
    """The default path (base, gpu) shares no volume between pods: checkpoints go to a storage URI, metrics and
    artifacts to MLflow. overlays/rwx shares a ReadWriteMany claim; the one-node laptop overlay a ReadWriteOnce one."""
    docs = rendered(kustomization)
    source, access = STORAGE[kustomization]
    for where, pod in pod_specs(one(docs, "RayCluster", "rlvr")):
        volume = next(v for v in pod["volumes"] if v["name"] == "rlvr-data")
        assert source in volume, f"{kustomization} {where}: {volume}"
        assert {"name": "rlvr-data", "mountPath": "/mnt/rlvr"} in pod["containers"][0]["volumeMounts"]
    claims = {doc["metadata"]["name"]: doc["spec"]["accessModes"] for doc in by_kind(docs, "PersistentVolumeClaim")}
    assert claims.get("rlvr-data") == access
    rwx = [name for name, modes in claims.items() if "ReadWriteMany" in modes]
    assert rwx == (["rlvr-data"] if kustomization == "overlays/rwx" else [])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_lands_in_the_rlvr_namespace(kustomization: str) -> None:
    """An overlay's own objects too (kustomize sets `namespace:` only on the objects of its own kustomization):
    without it the GPU overlay's ConfigMap went to the default namespace, out of the MLflow pod's reach."""
    for doc in rendered(kustomization):
        where = f"{kustomization} {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "rlvr", where


# ----------------------------------------------------------------------------------------------------------------
# Entrypoints


def _entrypoints(module: str | None = None) -> list:
    """pytest params (kustomization, job, entrypoint) of every RayJob, or of those running ``module``."""
    params = []
    for kust in KUSTOMIZATIONS:
        for job in by_kind(rendered(kust), "RayJob"):
            name, entrypoint = job["metadata"]["name"], job["spec"]["entrypoint"]
            command = entrypoint_command(entrypoint)
            if module is None or (command is not None and command[0] == module):
                params.append(pytest.param(kust, name, entrypoint, id=f"{kust}:{name}"))
    return params


@pytest.mark.parametrize(("kustomization", "job", "entrypoint"), _entrypoints())
def test_rayjob_entrypoints_name_commands_and_configs_that_exist(kustomization: str, job: str, entrypoint: str) -> None:
    command = entrypoint_command(entrypoint)
    assert command is not None, f"{kustomization} {job}: {entrypoint!r} is not `python -m rlvr_ray...`"
    module, config_name, overrides, options = command
    assert entrypoint.split()[:2] == ["python", "-m"]
    assert importlib.util.find_spec(module) is not None, f"{kustomization} {job}: no module {module}"
    assert config_name is not None and (REPO / "configs" / f"{config_name}.yaml").is_file()
    load_config(config_name, overrides)
    if module == "rlvr_ray.tune":
        assert options["--sweep"].startswith(f"{IMAGE_APP_DIR}/configs/sweeps/"), "name the sweep file in the image"
    for word in entrypoint.split():
        if word.startswith(IMAGE_APP_DIR + "/"):
            local = REPO / word.removeprefix(IMAGE_APP_DIR + "/")
            assert local.is_file(), f"{kustomization} {job}: {word} (repo: {local}) does not exist"


@pytest.mark.parametrize(("kustomization", "job", "entrypoint"), _entrypoints("rlvr_ray.main"))
def test_rayjob_main_entrypoints_dry_run(
    kustomization: str, job: str, entrypoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main accepts the exact arguments of each `rlvr_ray.main` entrypoint and finds the run ready for the cluster,
    in the environment the driver has there: the head pod's (MLFLOW_TRACKING_URI), joining the job's cluster."""
    from rlvr_ray.main import main

    head = one(rendered(kustomization), "RayJob", job)["spec"]["rayClusterSpec"]["headGroupSpec"]
    env = {item["name"]: item["value"] for item in head["template"]["spec"]["containers"][0]["env"]}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what `ray job submit` gives the driver
    code = main(["--dry-run", *entrypoint.split()[3:]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "placement plan" in out and "cluster checks: OK" in out


@pytest.mark.parametrize(("kustomization", "job", "entrypoint"), _entrypoints("rlvr_ray.tune"))
def test_rayjob_sweep_entrypoints_parse_and_validate(kustomization: str, job: str, entrypoint: str) -> None:
    """tune's own parser accepts each sweep entrypoint, and its sweep file validates against its base config."""
    from rlvr_ray.sweep import load_sweep, resolve_sweep_path, validate_sweep
    from rlvr_ray.tune import parse_args

    args = parse_args(entrypoint.split()[3:])
    validate_sweep(load_config(args.config_name, args.overrides), load_sweep(resolve_sweep_path(args.sweep)))
