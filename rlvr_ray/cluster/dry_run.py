"""``python -m rlvr_ray.main --dry-run``: the placement plan, and for a run aimed at a cluster what would break there.

Prints the plan; then, when the run is aimed at a cluster (:func:`rlvr_ray.cluster.readiness.cluster_reason`), checks
its storage and tracking settings, and with ``--manifest`` whether that manifest's worker groups can place every
actor (judging tracking with the head pod's environment there). Starts nothing. Exit 0: ready; 1: a problem (one
line each on stderr, naming the field or role, what is wrong and what to set instead); 2: a manifest that cannot be
read (one line).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from rlvr_ray.cluster.check import ManifestError, check_plan, cluster_shapes, format_result, load_documents
from rlvr_ray.cluster.readiness import cluster_problems, cluster_reason
from rlvr_ray.config import RunConfig
from rlvr_ray.placement import format_plan, placement_plan


def manifest_problems(cfg: RunConfig, manifest: str) -> list[str]:
    """Placement of ``cfg`` on every Ray cluster of the manifest, and readiness with each head pod's environment."""
    problems: list[str] = []
    plan = placement_plan(cfg)
    shapes = cluster_shapes(load_documents(manifest))
    # `ray job submit` goes to the RayCluster; a RayJob's own cluster is a copy of it (checked with its entrypoint by
    # python -m rlvr_ray.cluster check).
    for shape in [shape for shape in shapes if shape.source.startswith("RayCluster/")] or shapes:
        result = check_plan(plan, shape)
        result.readiness = cluster_problems(cfg, shape.driver_env, shape.shared_mounts)
        if result.ok:  # problems are printed below, one line each
            print(format_result(result, "this config"))
        problems += [f"{shape.source}: {line}" for line in result.problems]
        problems += [line for line in result.readiness if line not in problems]
    return problems


def dry_run(cfg: RunConfig, cluster: bool = False, manifest: str | None = None,
            env: Mapping[str, str] | None = None) -> int:
    """Print the plan and the cluster checks; the exit code of ``main --dry-run``."""
    env = os.environ if env is None else env
    print(format_plan(placement_plan(cfg)))
    reason = cluster_reason(cfg, env, forced=cluster, manifest=manifest)
    if reason is None:
        print("cluster checks: skipped, the run is not aimed at a cluster ($RAY_ADDRESS unset, no role pinned to a "
              "custom resource); pass --cluster or --manifest to run them")
        return 0
    print(f"cluster checks: aimed at a cluster ({reason})")
    try:
        problems = manifest_problems(cfg, manifest) if manifest else cluster_problems(cfg, env)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    print(f"cluster checks: {'OK' if not problems else f'{len(problems)} problem(s), see above'}")
    return 1 if problems else 0
