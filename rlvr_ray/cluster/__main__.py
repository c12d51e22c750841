"""``python -m rlvr_ray.cluster check MANIFEST [--config-name NAME] [--sweep FILE] [key=value ...]``

Reports whether the Ray cluster(s) in MANIFEST (a RayCluster/RayJob YAML file, a multi-document file such as
``kubectl kustomize`` output, ``-`` for stdin, or a kustomization directory, rendered with ``kubectl kustomize``)
can ever place every actor of the config's placement plan, and whether the config is ready for a cluster at all
(:mod:`rlvr_ray.cluster.readiness`: a storage URI or absolute output paths, an MLflow server; judged with the head
pod's environment, where the driver runs). With --sweep, or for a RayJob running ``rlvr_ray.tune``, the plan is a
sweep's: its ``max_concurrent_trials`` trials at once, sized by its ``trial_resources`` (placement only). Without
--config-name each RayJob is checked against what its own entrypoint runs. Exit 0: everything fits; 1: something
cannot be placed or would break on the cluster (one line each, naming the role or field); 2: bad input (one line
on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from rlvr_ray.cluster.check import (
    ClusterShape,
    ManifestError,
    check_plan,
    cluster_shapes,
    entrypoint_command,
    format_result,
    load_documents,
)
from rlvr_ray.cluster.readiness import cluster_problems
from rlvr_ray.config import ConfigError, RunConfig, load_config
from rlvr_ray.placement import PlacementPlan, placement_plan, sweep_plan

TUNE_MODULE = "rlvr_ray.tune"
DEFAULT_SWEEP = "reward_weights"  # python -m rlvr_ray.tune's default --sweep


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.cluster", description=__doc__.split("\n\n")[1])
    parser.add_argument("command", choices=["check"], help="check: can the manifest's worker groups place the actors?")
    parser.add_argument("manifest", help="YAML file, '-' for stdin, or a kustomization directory")
    parser.add_argument("--config-name", help="a file in configs/ (default: each RayJob's entrypoint config)")
    parser.add_argument("--sweep", help="size the plan for this sweep file or configs/sweeps name")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.num_actors=4")
    # Intermixed: overrides may come before or after the options, as with python -m rlvr_ray.main.
    return parser.parse_intermixed_args(argv)


def sized_for_sweep(cfg: RunConfig, sweep_arg: str) -> tuple[PlacementPlan, str]:
    """The sweep's concurrent trials, each the base config with the sweep's fixed settings and trial sizes."""
    from rlvr_ray.sweep import build_config, fixed_settings, load_sweep, resolve_sweep_path

    # An image path such as /app/configs/sweeps/x.yaml is found here by its name in configs/sweeps/.
    sweep = load_sweep(resolve_sweep_path(sweep_arg))
    trial = build_config(cfg, fixed_settings(sweep))
    plan = sweep_plan(placement_plan(trial), sweep.max_concurrent_trials, sweep.trial_resources.trial_cpus)
    return plan, f"sweep {sweep.name}, {sweep.max_concurrent_trials} trials at once"


class Chosen(NamedTuple):
    """What one cluster shape is checked against."""

    plan: PlacementPlan
    label: str
    config: RunConfig | None
    """The run's config, for the readiness checks; None for a sweep (its trials' outputs are the sweep's)."""


def plan_for(shape: ClusterShape, args: argparse.Namespace) -> Chosen | None:
    """The plan to check ``shape`` against: from --config-name (and --sweep), else from the RayJob's entrypoint,
    else None (a RayCluster without --config-name)."""
    if args.config_name:
        cfg, label, sweep = load_config(args.config_name, args.overrides), f"config {args.config_name}", args.sweep
    else:
        command = entrypoint_command(shape.entrypoint or "")
        if command is None or command.config_name is None:
            return None
        cfg = load_config(command.config_name, [*command.overrides, *args.overrides])
        label = f"entrypoint config {command.config_name}"
        sweep = command.options.get("--sweep", DEFAULT_SWEEP) if command.module == TUNE_MODULE else None
    if sweep is None:
        return Chosen(placement_plan(cfg), label, cfg)
    plan, sweep_label = sized_for_sweep(cfg, sweep)
    return Chosen(plan, f"{label}; {sweep_label}", None)


def run_check(args: argparse.Namespace) -> int:
    shapes = cluster_shapes(load_documents(args.manifest))
    results, skipped = [], []
    for shape in shapes:
        chosen = plan_for(shape, args)
        if chosen is None:
            skipped.append(shape.source)
            continue
        result = check_plan(chosen.plan, shape)
        if chosen.config is not None:
            result.readiness = cluster_problems(chosen.config, shape.driver_env, shape.shared_mounts)
        results.append(result)
        print(format_result(result, chosen.label))
    if skipped:
        print(f"skipped (no --config-name and no rlvr_ray entrypoint): {', '.join(skipped)}")
    if not results:
        raise ManifestError("nothing to check: pass --config-name NAME")
    return 0 if all(result.ok for result in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_check(args)
    except (ManifestError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
