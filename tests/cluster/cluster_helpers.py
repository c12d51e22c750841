"""Shared helpers of tests/cluster: repository paths, manifests rendered by real kustomize (``kubectl kustomize``),
the vendored KubeRay CRD schemas (tests/cluster/crds), pod-spec walking. Nothing here reads outside the repository."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from rlvr_ray.cluster.check import render_kustomization

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCKER = REPO / "docker"
# The KubeRay CRDs, vendored with their version and source (crds/README.md).
CRD_DIR = Path(__file__).resolve().parent / "crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/cpu-local", "overlays/rwx"]
# Where the Dockerfiles copy the repository; absolute paths in entrypoints refer to it.
IMAGE_APP_DIR = "/app"

Doc = dict[str, Any]


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@functools.cache
def _rendered(kustomization: str) -> tuple[Doc, ...]:
    return tuple(render_kustomization(CLUSTER / kustomization))


def rendered(kustomization: str) -> list[Doc]:
    """A fresh copy of the rendered objects of cluster/<kustomization> (rendering is cached)."""
    import copy

    return copy.deepcopy(list(_rendered(kustomization)))


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [doc for doc in docs if doc.get("kind") == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


# ----------------------------------------------------------------------------------------------------------------
# KubeRay CRD schemas


def crd_path(kind: str) -> Path:
    return CRD_DIR / CRD_FILES[kind]


def closed(schema: Doc) -> Doc:
    """An openAPIV3Schema as a JSON schema that rejects unknown fields.

    The API server silently prunes unknown fields of a structural CRD schema, so a typo ('maxReplica') would be
    dropped, not refused; closing every object that lists its properties (unless it preserves unknown fields)
    turns such typos into test failures. ``nullable`` becomes an explicit null alternative.
    """
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: closed(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [closed(sub) for sub in out[key]]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def crd_validator(kind: str) -> Any:
    import jsonschema

    # The C loader: the CRDs are megabytes of YAML, seconds with the pure-Python one.
    crd = yaml.load(crd_path(kind).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    versions = {version["name"]: version for version in crd["spec"]["versions"]}
    if "v1" not in versions:
        pytest.fail(f"{crd_path(kind)} has no v1 version")
    schema = closed(versions["v1"]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def crd_errors(doc: Doc) -> list[str]:
    """Every schema violation of a RayCluster/RayJob, as 'path: message' lines."""
    validator = crd_validator(doc["kind"])
    return [
        f"{doc['kind']}/{doc['metadata']['name']} {'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in validator.iter_errors(doc)
    ]


# ----------------------------------------------------------------------------------------------------------------
# Pod specs


def ray_cluster_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, cluster spec) of a RayCluster or of a RayJob's embedded cluster."""
    if doc["kind"] == "RayCluster":
        yield f"RayCluster/{doc['metadata']['name']}", doc["spec"]
    elif doc["kind"] == "RayJob" and "rayClusterSpec" in doc["spec"]:
        yield f"RayJob/{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod spec) of every pod an object creates: Deployments, Pods, Ray groups, RayJob submitters."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield f"{kind}/{name}", doc["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield f"Pod/{name}", doc["spec"]
    for where, spec in ray_cluster_specs(doc):
        yield f"{where} head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{where} {group['groupName']}", group["template"]["spec"]
    if kind == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield f"RayJob/{name} submitter", doc["spec"]["submitterPodTemplate"]["spec"]


def all_manifest_docs() -> list[tuple[str, Doc]]:
    """(label, object) of every rendered kustomization plus the stand-alone tool manifests."""
    docs = [(kust, doc) for kust in KUSTOMIZATIONS for doc in rendered(kust)]
    for path in sorted((CLUSTER / "tools").glob("*.yaml")):
        docs += [(f"tools/{path.name}", doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs
