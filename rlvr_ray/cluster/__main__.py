"""``python -m rlvr_ray.cluster check MANIFEST [--config-name NAME] [key=value ...]``

Reports whether the Ray cluster(s) in MANIFEST (a RayCluster/RayJob YAML file, a multi-document file such as
``kubectl kustomize`` output, ``-`` for stdin, or a kustomization directory) can ever place every actor of the
config's placement plan. Without --config-name each RayJob is checked against the config its own entrypoint runs.
Exit 0: everything fits; 1: something cannot be placed (the message names the role and the missing resource);
2: bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from rlvr_ray.cluster.check import (
    ClusterShape,
    ManifestError,
    check_plan,
    cluster_shapes,
    entrypoint_command,
    format_result,
    load_documents,
)
from rlvr_ray.config import ConfigError, RunConfig, load_config
from rlvr_ray.placement import placement_plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.cluster", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="can the manifest's worker groups place the config's actors?")
    check.add_argument("manifest", help="YAML file, '-' for stdin, or a kustomization directory")
    check.add_argument("--config-name", help="a file in configs/ (default: each RayJob's entrypoint config)")
    check.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.num_actors=4")
    return parser.parse_args(argv)


def config_for(shape: ClusterShape, args: argparse.Namespace) -> tuple[RunConfig, str] | None:
    """The explicit --config-name (with overrides), else the config the RayJob's entrypoint runs, else None."""
    if args.config_name:
        return load_config(args.config_name, args.overrides), f"config {args.config_name}"
    command = entrypoint_command(shape.entrypoint or "")
    if command is None or command[1] is None:
        return None
    _, name, overrides = command
    return load_config(name, [*overrides, *args.overrides]), f"entrypoint config {name}"


def run_check(args: argparse.Namespace) -> int:
    shapes = cluster_shapes(load_documents(args.manifest))
    results, skipped = [], []
    for shape in shapes:
        chosen = config_for(shape, args)
        if chosen is None:
            skipped.append(shape.source)
            continue
        cfg, label = chosen
        result = check_plan(placement_plan(cfg), shape)
        results.append(result)
        print(format_result(result, label))
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
