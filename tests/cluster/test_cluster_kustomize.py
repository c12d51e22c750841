"""Rendering is real kustomize (`kubectl kustomize DIR`), in the tests and in `python -m rlvr_ray.cluster check`;
a missing kubectl or a broken kustomization is one clear error line, and nothing reads outside the repository."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cluster_helpers import CLUSTER, CRD_DIR, CRD_FILES, KUSTOMIZATIONS, REPO, by_kind, one, rendered

from rlvr_ray.cluster.__main__ import main
from rlvr_ray.cluster.check import ManifestError, render_kustomization


def test_kubectl_bundles_kustomize_v5() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "the cluster tests render with `kubectl kustomize`: install kubectl 1.27 or newer"
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Kustomize Version: v(\d+)\.", version)
    assert match and int(match.group(1)) >= 5, version


def test_every_kustomization_of_the_repository_is_tested() -> None:
    found = sorted(str(path.parent.relative_to(CLUSTER)) for path in CLUSTER.glob("**/kustomization.yaml"))
    components = [name for name in found if name.startswith("components/")]
    assert sorted(KUSTOMIZATIONS) == [name for name in found if name not in components]
    assert components == ["components/shared-volume"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_helpers_render_exactly_what_kubectl_prints(kustomization: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(CLUSTER / kustomization)], capture_output=True, text=True,
                         check=True).stdout
    assert rendered(kustomization) == [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjobs_carry_the_patched_cluster_spec(kustomization: str) -> None:
    """The replacement runs after the overlay's patches and components: the RayJobs' copies carry the patched spec
    (e.g. the shared volume, the GPU groups), not the base's."""
    docs = rendered(kustomization)
    spec = one(docs, "RayCluster", "rlvr")["spec"]
    for job in by_kind(docs, "RayJob"):
        assert job["spec"]["rayClusterSpec"] == spec
    volume = spec["headGroupSpec"]["template"]["spec"]["volumes"][0]
    shared = kustomization in ("overlays/rwx", "overlays/cpu-local")
    assert ("persistentVolumeClaim" in volume) == shared


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_check_renders_a_directory_with_kubectl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An overlay of the shipped base with a strategic-merge patch (which the old in-repo subset refused): turning the
    autoscaler off leaves the base's fixed `replicas: 0`, so nothing can be placed."""
    shutil.copytree(CLUSTER, tmp_path / "cluster")
    overlay = tmp_path / "cluster" / "overlays" / "fixed"
    overlay.mkdir()
    _write(overlay, {
        "kustomization.yaml": "resources: [../../base]\npatches: [{path: patch.yaml}]\n",
        "patch.yaml": "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: rlvr}\n"
                      "spec: {enableInTreeAutoscaling: false}\n",
    })
    spec = one(render_kustomization(overlay), "RayCluster", "rlvr")["spec"]
    assert spec["enableInTreeAutoscaling"] is False and len(spec["workerGroupSpecs"]) == 3
    assert main(["check", str(CLUSTER / "base"), "--config-name", "cluster_cpu_local"]) == 1  # storage: no claim
    capsys.readouterr()
    assert main(["check", str(overlay), "--config-name", "cluster_cpu_local",
                 "storage_uri=s3://bucket/runs"]) == 1
    out = capsys.readouterr().out
    assert "RayCluster/rlvr (config cluster_cpu_local): CANNOT PLACE" in out
    assert "rollout actor needs CPU 1, rollout 1 on one node but no group's node offers all of that" in out


def test_a_broken_kustomization_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, {"kustomization.yaml": "resources: [missing.yaml]\n"})
    code = main(["check", str(tmp_path), "--config-name", "cluster_cpu_local"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path}: kubectl kustomize failed: ") and "missing.yaml" in err


def test_missing_kubectl_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither kubectl nor kustomize
    with pytest.raises(ManifestError, match="install kubectl"):
        render_kustomization(CLUSTER / "base")
    assert main(["check", str(CLUSTER / "overlays/cpu-local"), "--config-name", "cluster_cpu_local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs kubectl" in err and "install kubectl" in err


def test_vendored_crds_are_the_recorded_files() -> None:
    """The CRDs live in the repository, with their version, source and checksums in crds/README.md."""
    readme = (CRD_DIR / "README.md").read_text()
    assert "v1.7" in readme and "ray-project/kuberay" in readme
    for name in CRD_FILES.values():
        digest = hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest()
        assert f"`{name}`: {digest}" in readme, f"{name}: checksum not recorded in crds/README.md"


def test_the_crds_are_read_from_inside_the_repository() -> None:
    """A fresh clone has no ../shared beside it."""
    assert CRD_DIR.resolve().is_relative_to(REPO) and CRD_DIR.name == "crds"
    assert all((CRD_DIR / name).is_file() for name in CRD_FILES.values())
