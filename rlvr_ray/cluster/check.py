"""Can a KubeRay cluster ever run a config's placement plan? A check that prevents jobs stuck in Pending.

A RayCluster (or the ``rayClusterSpec`` of a RayJob) is read the way the Ray autoscaler reads it: each group's
Ray resources per node come from the group's ``resources`` field, else ``rayStartParams`` (``num-cpus``,
``num-gpus``, ``resources`` JSON), else the Ray container's limits (then requests); a worker group can grow to
``maxReplicas`` nodes when in-tree autoscaling is on, else it has its fixed ``replicas``. The actors of
:func:`rlvr_ray.placement.placement_plan` are then bin-packed first-fit (scarcest first) into those nodes.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from rlvr_ray.placement import PlacementPlan, RolePlacement, format_needs

Doc = dict[str, Any]

# Kubernetes quantity suffixes; CPUs and GPUs rarely use more than "m", but the check must not misread any.
_SUFFIXES = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_STANDARD = {"cpu": "CPU", "gpu": "GPU", "memory": "memory", "tpu": "TPU"}
_VALUELESS_FLAGS = {"--dry-run", "--resume"}  # flags of main and tune that take no value


class ManifestError(ValueError):
    """The manifest cannot be read or has no Ray cluster; ``str(err)`` is one line."""


@dataclass(frozen=True)
class NodeGroup:
    """One head or worker group: Ray resources of each of its nodes and how many nodes it can have."""

    name: str
    capacity: dict[str, float]
    max_nodes: int
    is_head: bool = False

    def describe(self) -> str:
        nodes = "1 node" if self.max_nodes == 1 else f"up to {self.max_nodes} nodes"
        return f"{self.name} ({format_needs(self.capacity)}; {nodes})"


@dataclass(frozen=True)
class ClusterShape:
    """The groups of one RayCluster or RayJob, with the job's entrypoint when it has one."""

    source: str
    groups: tuple[NodeGroup, ...]
    entrypoint: str | None = None
    driver_env: dict[str, str | None] = field(default_factory=dict)
    """Environment variables of the head's Ray container, where the job driver runs (None: from a Secret or
    ConfigMap, value unknown)."""
    shared_mounts: frozenset[str] = frozenset()
    """Mount paths that every Ray pod backs with the same non-per-pod volume (a claim, NFS, CSI...)."""


@dataclass
class CheckResult:
    """Whether every actor of the plan was placed; ``problems`` are one line each."""

    source: str
    problems: list[str] = field(default_factory=list)
    placed: dict[str, dict[str, int]] = field(default_factory=dict)
    """role -> group -> actors placed there."""
    nodes_used: dict[str, int] = field(default_factory=dict)
    readiness: list[str] = field(default_factory=list)
    """What would break on the cluster besides placement (rlvr_ray.cluster.readiness), one line each."""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.readiness


# ----------------------------------------------------------------------------------------------------------------
# Reading manifests


def load_documents(manifest: str) -> list[Doc]:
    """Objects of a YAML file (multi-document), of stdin for '-', or of a kustomization directory (rendered)."""
    if manifest != "-" and Path(manifest).is_dir():
        return render_kustomization(manifest)
    try:
        text = sys.stdin.read() if manifest == "-" else Path(manifest).read_text()
        docs = list(yaml.safe_load_all(text))
    except OSError as err:
        raise ManifestError(f"{manifest}: cannot read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{manifest}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return [doc for doc in docs if isinstance(doc, dict)]


def render_kustomization(directory: str | Path) -> list[Doc]:
    """Objects of ``kubectl kustomize DIRECTORY`` (the kustomize built into kubectl), else ``kustomize build``."""
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(directory)]
    elif kustomize:
        command = [kustomize, "build", str(directory)]
    else:
        raise ManifestError(
            f"{directory}: rendering a kustomization needs kubectl (1.27 or newer, kustomize v5 built in) or the "
            "kustomize binary on PATH, and neither was found; install kubectl "
            "(https://kubernetes.io/docs/tasks/tools/), or pass a rendered YAML file instead of the directory"
        )
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ManifestError(f"{directory}: {' '.join(command[1:])} could not run ({err})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()] or [f"exit {done.returncode}"]
        raise ManifestError(f"{directory}: {Path(command[0]).name} {command[1]} failed: {lines[0]}")
    try:
        docs = list(yaml.safe_load_all(done.stdout))
    except yaml.YAMLError as err:
        raise ManifestError(f"{directory}: rendered output is not valid YAML ({err})") from None
    return [doc for doc in docs if isinstance(doc, dict)]


def cluster_shapes(docs: list[Doc]) -> list[ClusterShape]:
    """Every RayCluster and every RayJob that brings its own cluster (``rayClusterSpec``)."""
    shapes = []
    for doc in docs:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name", "?")
        spec = doc.get("spec") or {}
        if kind == "RayCluster":
            shapes.append(shape_of(f"RayCluster/{name}", spec))
        elif kind == "RayJob" and "rayClusterSpec" in spec:
            shapes.append(shape_of(f"RayJob/{name}", spec["rayClusterSpec"], spec.get("entrypoint")))
    if not shapes:
        raise ManifestError("no RayCluster, and no RayJob with a rayClusterSpec, in the manifest")
    return shapes


def shape_of(source: str, spec: Doc, entrypoint: str | None = None) -> ClusterShape:
    try:
        autoscaling = bool(spec.get("enableInTreeAutoscaling", False))
        groups = [NodeGroup("head", group_capacity(spec["headGroupSpec"], "head", autoscaling), 1, is_head=True)]
        for group in spec.get("workerGroupSpecs") or []:
            name = group["groupName"]
            capacity = group_capacity(group, name, autoscaling)
            groups.append(NodeGroup(name, capacity, worker_nodes(group, autoscaling)))
    except (KeyError, TypeError, IndexError) as err:
        raise ManifestError(f"{source}: malformed cluster spec (missing {err})") from None
    except ManifestError as err:
        raise ManifestError(f"{source}: {err}") from None
    except ValueError as err:  # e.g. num-cpus: "four"
        raise ManifestError(f"{source}: bad value in cluster spec ({err})") from None
    return ClusterShape(source, tuple(groups), entrypoint, head_env(spec), shared_mounts(spec))


# Volume sources that are private to a pod (or to a node): never shared between Ray pods on several nodes.
_PER_POD_VOLUMES = {"emptyDir", "ephemeral", "configMap", "secret", "downwardAPI", "projected", "hostPath", "image"}


def shared_mounts(spec: Doc) -> frozenset[str]:
    """Mount paths of the Ray container that every pod (head and each worker group) backs with the same shared
    volume, e.g. a PersistentVolumeClaim; per-pod volumes (emptyDir, ...) do not count."""
    pods = [spec.get("headGroupSpec") or {}, *(spec.get("workerGroupSpecs") or [])]
    common: set[tuple[str, str]] | None = None
    for group in pods:
        pod = (group.get("template") or {}).get("spec") or {}
        shared = {
            volume["name"]: json.dumps({k: v for k, v in volume.items() if k != "name"}, sort_keys=True)
            for volume in pod.get("volumes") or [] if not _PER_POD_VOLUMES & set(volume)
        }
        container = (pod.get("containers") or [{}])[0]
        here = {(str(mount["mountPath"]), shared[mount["name"]]) for mount in container.get("volumeMounts") or []
                if mount.get("name") in shared}
        common = here if common is None else common & here
    return frozenset(path for path, _ in common or set())


def head_env(spec: Doc) -> dict[str, str | None]:
    """``env`` of the head's first container: literal values, None for those set from a Secret or ConfigMap."""
    containers = (((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get("containers")
    env = (containers or [{}])[0].get("env") or []
    return {str(item["name"]): (None if "valueFrom" in item else str(item.get("value", ""))) for item in env
            if isinstance(item, dict) and "name" in item}


def worker_nodes(group: Doc, autoscaling: bool) -> int:
    """Most nodes the group can have: maxReplicas with autoscaling, else replicas clamped to [min, max] as KubeRay
    does; times numOfHosts (multi-host replicas)."""
    if group.get("suspend"):
        return 0
    low, high = int(group.get("minReplicas", 0)), int(group.get("maxReplicas", 2**31 - 1))
    replicas = high if autoscaling else min(max(int(group.get("replicas", 0)), low), high)
    return replicas * int(group.get("numOfHosts", 1))


def parse_quantity(text: Any) -> float:
    """Kubernetes quantity -> number of units: '500m' -> 0.5, '2' -> 2, '1Gi' -> 1073741824."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity")
    try:
        return float(Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""])
    except InvalidOperation:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity") from None


def group_capacity(group: Doc, name: str, autoscaling: bool) -> dict[str, float]:
    """Ray resources of one node of the group, with the Ray autoscaler's precedence:
    the group's ``resources`` field, then rayStartParams, then the Ray container's limits/requests.
    CPUs and GPUs from Kubernetes quantities are rounded up, as KubeRay and the autoscaler do."""
    params = group.get("rayStartParams") or {}
    container = group["template"]["spec"]["containers"][0].get("resources") or {}
    capacity = {"CPU": float(_cpus(params, container)), "GPU": float(_gpus(params, container))}
    if group.get("resources"):
        # When present, the group field is the only source of custom resources (rayStartParams' JSON is ignored).
        for key, value in group["resources"].items():
            ray_name = _STANDARD.get(key.lower(), key)
            amount = parse_quantity(value)
            capacity[ray_name] = float(math.ceil(amount)) if ray_name in ("CPU", "GPU") else amount
    else:
        capacity.update(_start_param_resources(params.get("resources"), name, autoscaling))
    capacity.pop("memory", None)
    return {key: value for key, value in capacity.items() if value > 0 or key == "CPU"}


def _cpus(params: Doc, container: Doc) -> int:
    if "num-cpus" in params:
        return int(float(params["num-cpus"]))
    for kind in ("limits", "requests"):
        if "cpu" in (container.get(kind) or {}):
            return math.ceil(parse_quantity(container[kind]["cpu"]))
    return 0  # Ray would count the host's cores; unknowable here, so nothing is promised


def _gpus(params: Doc, container: Doc) -> int:
    if "num-gpus" in params:
        return int(float(params["num-gpus"]))
    for kind in ("limits", "requests"):
        for key, value in (container.get(kind) or {}).items():
            if key.endswith("gpu") and parse_quantity(value) > 0:  # nvidia.com/gpu, amd.com/gpu
                return math.ceil(parse_quantity(value))
    return 0


def _start_param_resources(text: str | None, group: str, autoscaling: bool) -> dict[str, float]:
    """rayStartParams ``resources``: KubeRay trims quotes leniently, but the autoscaler drops exactly one pair of
    outer quotes and backslashes, i.e. wants '"{\\"name\\": 1}"' with integer values; a form it cannot parse
    crashes autoscaling, so it is reported rather than guessed around."""
    if not text:
        return {}
    lenient = _json_object(str(text).strip("'\"` ").replace("\\", ""))
    if lenient is None or not all(isinstance(v, (int, float)) for v in lenient.values()):
        raise ManifestError(f"group {group}: rayStartParams resources {text!r} is not a JSON object of numbers")
    strict = _json_object(str(text)[1:-1].replace("\\", ""))
    if autoscaling and (strict is None or not all(isinstance(v, int) for v in strict.values())):
        raise ManifestError(
            f"group {group}: rayStartParams resources {text!r} is not in the form the Ray autoscaler parses "
            "('\"{\\\"name\\\": 1}\"', integers); use the group's `resources:` field instead"
        )
    return {str(key): float(value) for key, value in lenient.items()}


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# ----------------------------------------------------------------------------------------------------------------
# Entrypoints


class EntryCommand(NamedTuple):
    """What a RayJob entrypoint runs: ``python -m MODULE --config-name NAME [--opt VALUE ...] [key=value ...]``."""

    module: str
    config_name: str | None
    overrides: list[str]
    options: dict[str, str]
    """Other options with their values, e.g. {'--sweep': '/app/configs/sweeps/reward_weights.yaml'}."""


def entrypoint_command(entrypoint: str) -> EntryCommand | None:
    """Parse an entrypoint running one of our modules; None for anything else.

    >>> entrypoint_command("python -m rlvr_ray.tune --config-name m --sweep s.yaml a=1")
    EntryCommand(module='rlvr_ray.tune', config_name='m', overrides=['a=1'], options={'--sweep': 's.yaml'})
    """
    words = shlex.split(entrypoint)
    if "-m" not in words or words.index("-m") + 1 >= len(words):
        return None
    module_at = words.index("-m") + 1
    if not words[module_at].startswith("rlvr_ray"):
        return None
    options: dict[str, str] = {}
    overrides: list[str] = []
    rest = iter(words[module_at + 1:])
    for word in rest:
        if word.startswith("--"):
            name, has_value, value = word.partition("=")
            if not has_value and name not in _VALUELESS_FLAGS:
                value = next(rest, "")
            options[name] = value
        elif "=" in word:
            overrides.append(word)
    config_name = options.pop("--config-name", None)
    return EntryCommand(words[module_at], config_name, overrides, options)


# ----------------------------------------------------------------------------------------------------------------
# Packing


@dataclass
class _Node:
    group: NodeGroup
    free: dict[str, float]

    def fits(self, needs: dict[str, float]) -> bool:
        return all(self.free.get(name, 0.0) + 1e-9 >= amount for name, amount in needs.items())

    def take(self, needs: dict[str, float]) -> None:
        for name, amount in needs.items():
            self.free[name] -= amount


class _Cluster:
    """Nodes are opened lazily, up to each group's maximum, so a maxReplicas of thousands costs nothing."""

    def __init__(self, shape: ClusterShape) -> None:
        self.groups = shape.groups
        self.nodes: list[_Node] = []
        self.opened = dict.fromkeys((g.name for g in shape.groups), 0)

    def place(self, needs: dict[str, float], head_only: bool) -> NodeGroup | None:
        for node in self.nodes:
            if (node.group.is_head or not head_only) and node.fits(needs):
                node.take(needs)
                return node.group
        for group in self._opening_order(needs):
            if head_only and not group.is_head:
                continue
            fresh = _Node(group, dict(group.capacity))
            if self.opened[group.name] < group.max_nodes and fresh.fits(needs):
                self.opened[group.name] += 1
                fresh.take(needs)
                self.nodes.append(fresh)
                return group
        return None


    def _opening_order(self, needs: dict[str, float]) -> list[NodeGroup]:
        """Manifest order, but an actor that needs no GPU opens GPU nodes last, as Ray's autoscaler avoids them."""
        if needs.get("GPU", 0.0) > 0:
            return list(self.groups)
        return sorted(self.groups, key=lambda group: group.capacity.get("GPU", 0.0) > 0)


def _scarcity(role: RolePlacement) -> tuple[bool, float, bool, float]:
    """Sort key: driver-pinned first, then GPUs, custom resources, CPUs; the scarcest go first (first-fit
    decreasing), so small actors cannot fragment the nodes big ones need."""
    needs = role.needs()
    return (not role.on_driver_node, -needs.get("GPU", 0.0), role.resource is None, -needs.get("CPU", 0.0))


def check_plan(plan: PlacementPlan, shape: ClusterShape) -> CheckResult:
    """Place every actor of the plan into the cluster's groups; one problem line per role that does not fit."""
    cluster = _Cluster(shape)
    result = CheckResult(shape.source)
    for role in sorted(plan.actors(), key=_scarcity):
        placed: dict[str, int] = {}
        for _ in range(role.count):
            group = cluster.place(role.needs(), head_only=role.on_driver_node)
            if group is None:
                break
            placed[group.name] = placed.get(group.name, 0) + 1
        result.placed[role.role] = placed
        if sum(placed.values()) < role.count:
            result.problems.append(explain_shortfall(role, sum(placed.values()), shape))
    result.nodes_used = {name: count for name, count in cluster.opened.items() if count}
    return result


def explain_shortfall(role: RolePlacement, placed: int, shape: ClusterShape) -> str:
    """Why the rest of ``role`` cannot be placed: a missing resource, nodes too small, or too few nodes."""
    groups = "; ".join(group.describe() for group in shape.groups)
    needs = role.needs()
    candidates = [g for g in shape.groups if g.is_head or not role.on_driver_node]
    for name in sorted(needs, key=lambda n: (n == "CPU", n == "GPU")):  # custom resources, then GPU, then CPU
        if not any(g.capacity.get(name, 0.0) > 0 for g in candidates):
            return (f"{role.label} needs resource '{name}' ({needs[name]:g}) but no worker group provides it; "
                    f"groups: {groups}")
    if not any(_Node(g, dict(g.capacity)).fits(needs) for g in candidates if g.max_nodes > 0):
        return (f"{role.label} needs {format_needs(needs)} on one node but no group's node offers all of that; "
                f"groups: {groups}")
    return (f"{role.role}: only {placed} of {role.count} {role.label}s fit ({format_needs(needs)} each); the groups "
            f"that could host more are full at their node limit (raise maxReplicas or lower the count); "
            f"groups: {groups}")


def format_result(result: CheckResult, config_label: str) -> str:
    if not result.ok:
        verdict = "CANNOT PLACE" if result.problems else "NOT READY FOR A CLUSTER"
        lines = [*result.problems, *result.readiness]
        return "\n".join([f"{result.source} ({config_label}): {verdict}", *(f"  {line}" for line in lines)])
    spots = "; ".join(
        f"{role} x{sum(groups.values())} -> " + ", ".join(f"{g} ({n})" for g, n in groups.items())
        for role, groups in result.placed.items()
    )
    nodes = ", ".join(f"{name} {count}" for name, count in result.nodes_used.items())
    return f"{result.source} ({config_label}): OK\n  {spots}\n  nodes used: {nodes}"
