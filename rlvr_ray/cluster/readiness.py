"""Will a run config work on a multi-node cluster? What breaks there but not on one machine, found without one.

On a cluster the job driver runs on the head pod and the actors on other pods; they share the network, not a
disk. So a run aimed at a cluster needs:

- a storage URI for checkpoints that every node reaches (``storage_uri``: ``s3://``, ``gs://``, ... or an absolute
  path on a volume every Ray pod mounts), unless its output paths are absolute (such a shared volume): relative
  ``output_dir`` / ``warm_start_dir`` with no ``storage_uri`` land on whichever pod wrote them;
- an MLflow tracking server (``tracking.tracking_uri`` or ``$MLFLOW_TRACKING_URI``), not a SQLite file or a local
  file store, which only the driver's pod could write and which goes away with it;
- worker groups that provide every resource the placement plan asks for (``python -m rlvr_ray.cluster check``,
  or ``main --dry-run --manifest``).

Given a manifest, local absolute paths (a ``storage_uri`` such as ``/mnt/rlvr/checkpoints``, or absolute output
paths with no ``storage_uri``) must also lie on a volume that every Ray pod of it shares.

A run is taken to be *aimed at a cluster* (:func:`cluster_reason`) when ``--cluster`` is given, when
``$RAY_ADDRESS`` names a cluster to join (``ray job submit`` sets it for the driver; ``local`` does not count), when
a manifest is given, or when a role is pinned to a worker group by a custom resource (``rollout.resource`` etc.),
which only a cluster's worker groups provide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import urlparse

from rlvr_ray.config import RunConfig
from rlvr_ray.placement import placement_plan

TRACKING_SERVICE = "http://rlvr-mlflow:5000"  # the MLflow Service of cluster/base
STORAGE_EXAMPLE = "s3://BUCKET/PATH"
# URI schemes of local files: what only the host that writes them can read.
_LOCAL_SCHEMES = {"", "file"}


def cluster_reason(
    cfg: RunConfig, env: Mapping[str, str | None], forced: bool = False, manifest: str | None = None
) -> str | None:
    """Why ``cfg`` is taken to be aimed at a cluster, or None for a run on this machine alone."""
    if forced:
        return "--cluster was given"
    if manifest:
        return f"checked against the manifest {manifest}"
    address = (env.get("RAY_ADDRESS") or "").strip()
    if address and address != "local":
        return f"$RAY_ADDRESS is set ({address})"
    pinned = [role.role for role in placement_plan(cfg).actors() if role.resource]
    if pinned:
        return f"roles pinned to worker groups by custom resources ({', '.join(pinned)})"
    return None


def _is_local_path(uri: str) -> bool:
    return urlparse(uri).scheme in _LOCAL_SCHEMES


def _local_path(uri: str) -> PurePosixPath:
    return PurePosixPath(urlparse(uri).path if uri.startswith("file:") else uri)


def _unshared(path: PurePosixPath, shared: frozenset[str] | None) -> str | None:
    """Why an absolute local ``path`` is not on a volume every Ray pod shares (None: it is, or no manifest says)."""
    if shared is None or any(path.is_relative_to(mount) for mount in shared):
        return None
    mounts = ", ".join(sorted(shared)) or "none"
    return f"is not on a volume every Ray pod of the manifest shares (shared mounts: {mounts})"


def storage_problems(cfg: RunConfig, shared: frozenset[str] | None = None) -> list[str]:
    """Relative output paths with no storage URI, a storage URI that is a relative local path, and (given the
    manifest's ``shared`` mount paths) local paths that no shared volume holds."""
    if cfg.storage_uri:
        if not _is_local_path(cfg.storage_uri):
            return []
        path = _local_path(cfg.storage_uri)
        why = "is a relative local path" if not path.is_absolute() else _unshared(path, shared)
        if why is None:
            return []
        return [
            f"storage_uri: {cfg.storage_uri!r} {why}, so each node would keep its own checkpoints; set "
            f"storage_uri={STORAGE_EXAMPLE} (or gs://...), or an absolute path on a volume every Ray pod mounts "
            "(cluster/overlays/rwx)"
        ]
    problems = []
    for field, value in (("output_dir", cfg.output_dir), ("warm_start_dir", cfg.warm_start_dir)):
        why = _unshared(PurePosixPath(value), shared)
        if PurePosixPath(value).is_absolute() and why is not None:
            problems.append(
                f"{field}: {value!r} {why} and storage_uri is not set; set storage_uri={STORAGE_EXAMPLE} (where "
                "checkpoints persist; every node must reach it), or mount a shared volume there (cluster/overlays/rwx)"
            )
        elif not PurePosixPath(value).is_absolute():
            problems.append(
                f"{field}: {value!r} is a relative path and storage_uri is not set, so checkpoints and outputs stay "
                f"on the pod that wrote them; set storage_uri={STORAGE_EXAMPLE} (where checkpoints persist; every "
                f"node must reach it), or make {field} an absolute path on a volume every Ray pod mounts"
            )
    return problems


def tracking_problems(cfg: RunConfig, env: Mapping[str, str | None]) -> list[str]:
    """A tracking store that lives in one host's files: unset (SQLite beside the outputs), sqlite://, file store."""
    field: str
    uri: str | None
    if cfg.tracking.tracking_uri:
        field, uri = "tracking.tracking_uri", cfg.tracking.tracking_uri
    elif "MLFLOW_TRACKING_URI" in env and env["MLFLOW_TRACKING_URI"] is None:
        return []  # a manifest sets it from a Secret or ConfigMap: a value we cannot see, taken to be a server
    else:
        field, uri = "$MLFLOW_TRACKING_URI", env.get("MLFLOW_TRACKING_URI")
    fix = f"set tracking.tracking_uri={TRACKING_SERVICE} (the MLflow service of cluster/base) or another MLflow server"
    if not uri:
        return [
            "tracking.tracking_uri: not set and $MLFLOW_TRACKING_URI is unset, so the run would log to a SQLite file "
            f"beside its outputs on the driver's pod; {fix}"
        ]
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        return [f"{field}: {uri!r} is a SQLite store, a file on the driver's pod that other nodes cannot reach; {fix}"]
    if scheme in _LOCAL_SCHEMES:
        return [f"{field}: {uri!r} is a local file store that other nodes cannot reach; {fix}"]
    return []


def cluster_problems(
    cfg: RunConfig, env: Mapping[str, str | None], shared: frozenset[str] | None = None
) -> list[str]:
    """Every reason ``cfg`` would break on a multi-node cluster (storage, tracking), one line each naming the field,
    what is wrong and what to set instead. ``env``: the driver's environment (of the head pod, for a manifest);
    ``shared``: the manifest's mount paths every Ray pod shares (None: no manifest, absolute paths are trusted)."""
    return [*storage_problems(cfg, shared), *tracking_problems(cfg, env)]
