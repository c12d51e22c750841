"""rlvr_ray.cluster.kustomize: the offline kustomize subset behaves like kustomize on what cluster/ uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlvr_ray.cluster.kustomize import KustomizeError, field_path, image_name, render

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - {name: app, image: "registry:5000/team/web:1.0", env: [{name: A, value: "1"}],
           securityContext: &ctx {runAsNonRoot: true}}
      initContainers:
        - {name: init, image: busybox, securityContext: *ctx}
---
apiVersion: example.io/v1
kind: Widget
metadata: {name: w}
spec:
  nested:
    template: {spec: {containers: [{name: c, image: "registry:5000/team/web:1.0"}]}}
  copy: {}
"""


def patch(ops: list[dict], **target: str) -> dict:
    """A `patches` entry: inline JSON6902 operations and their target selector."""
    return {"patch": yaml.safe_dump(ops), "target": target}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def build(tmp_path: Path, kustomization: dict, extra: dict[str, str] | None = None) -> dict[str, dict]:
    files = {"base/kustomization.yaml": "resources: [app.yaml]\n", "base/app.yaml": DEPLOYMENT,
             "over/kustomization.yaml": yaml.safe_dump(kustomization), **(extra or {})}
    docs = render(write(tmp_path, files) / "over")
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


def test_resources_namespace_and_images(tmp_path: Path) -> None:
    docs = build(tmp_path, {
        "resources": ["../base", "ns.yaml"], "namespace": "team",
        "images": [{"name": "registry:5000/team/web", "newName": "ghcr.io/x/web", "newTag": "2.0"}],
    }, {"over/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n"})
    assert docs["Deployment/web"]["metadata"]["namespace"] == "team"
    assert "Namespace/team" in docs, "kustomize renames a Namespace object to the kustomization's namespace"
    assert docs["Deployment/web"]["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/x/web:2.0"
    # The images transformer reaches containers at any depth of any kind (custom resources too).
    assert docs["Widget/w"]["spec"]["nested"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/x/web:2.0"
    assert docs["Deployment/web"]["spec"]["template"]["spec"]["initContainers"][0]["image"] == "busybox"


def test_json6902_patches_with_test_guards(tmp_path: Path) -> None:
    ops: list[dict] = [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "app"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "2"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "B", "value": "3"}},
        {"op": "add", "path": "/spec/replicas", "value": 2},
        {"op": "remove", "path": "/spec/template/spec/initContainers"},
    ]
    docs = build(tmp_path, {"resources": ["../base"], "patches": [patch(ops, kind="Deployment", name="web")]})
    spec = docs["Deployment/web"]["spec"]
    assert spec["replicas"] == 2
    env = spec["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]
    assert "initContainers" not in spec["template"]["spec"]


def test_a_failing_test_op_stops_the_build(tmp_path: Path) -> None:
    ops = [{"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "not-app"}]
    with pytest.raises(KustomizeError, match="test failed"):
        build(tmp_path, {"resources": ["../base"], "patches": [patch(ops, kind="Deployment")]})


def test_patching_one_alias_copy_leaves_the_others(tmp_path: Path) -> None:
    ops = [{"op": "add", "path": "/spec/template/spec/containers/0/securityContext/runAsUser", "value": 7}]
    docs = build(tmp_path, {"resources": ["../base"], "patches": [patch(ops, kind="Deployment")]})
    pod = docs["Deployment/web"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 7
    assert "runAsUser" not in pod["initContainers"][0]["securityContext"], "kustomize expands aliases on reading"


def test_delete_patch_removes_a_resource(tmp_path: Path) -> None:
    delete = "$patch: delete\napiVersion: example.io/v1\nkind: Widget\nmetadata: {name: w}\n"
    extra = {"over/delete.yaml": delete}
    docs = build(tmp_path, {"resources": ["../base"], "patches": [{"path": "delete.yaml"}]}, extra)
    assert set(docs) == {"Deployment/web"}


def test_replacements_copy_whole_subtrees_after_patches(tmp_path: Path) -> None:
    ops = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "patched"}]
    docs = build(tmp_path, {
        "resources": ["../base"],
        "patches": [patch(ops, kind="Deployment")],
        "replacements": [{"source": {"kind": "Deployment", "name": "web", "fieldPath": "spec.template"},
                          "targets": [{"select": {"kind": "Widget"}, "fieldPaths": ["spec.copy", "spec.made.here"],
                                       "options": {"create": True}}]}],
    })
    widget = docs["Widget/w"]["spec"]
    assert widget["copy"] == widget["made"]["here"] == docs["Deployment/web"]["spec"]["template"]
    assert widget["copy"]["spec"]["containers"][0]["image"] == "patched"


def test_unsupported_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match="helmCharts"):
        build(tmp_path, {"resources": ["../base"], "helmCharts": []})
    with pytest.raises(KustomizeError, match="strategic merge"):
        build(tmp_path, {"resources": ["../base"], "patches": [{"patch": "kind: Deployment\nmetadata: {name: web}\n"}]})


def test_helpers() -> None:
    assert image_name("registry:5000/a/b:tag@sha256:0") == "registry:5000/a/b"
    assert image_name("busybox") == "busybox"
    assert field_path("spec.containers.[name=a.b].image") == ["spec", "containers", "[name=a.b]", "image"]
