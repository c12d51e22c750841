"""``python -m rlvr_ray.main [--config-name NAME] [--dry-run] [key=value ...]``

Starts a local Ray (or joins the cluster it runs in, e.g. under ``ray job submit``), makes or reuses the SFT warm
start, runs RL, and ends with a before/after table of held-out accuracy and the paths of what it wrote.

``--dry-run`` starts nothing: it prints the placement plan and, for a run aimed at a cluster, checks what would
break there (:mod:`rlvr_ray.cluster.dry_run`). Exit 0: done; 1: a dry run found problems; 2: bad config or input;
3: the Ray head was lost mid-run (one line names the last checkpoint; the same command resumes from it).
"""

from __future__ import annotations

import argparse
import sys

from rlvr_ray.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.main", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-name", default="train_rlvr_model", help="a file in configs/ (without .yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the placement plan and the cluster checks, and exit; starts nothing")
    parser.add_argument("--cluster", action="store_true",
                        help="with --dry-run: check the config as aimed at a cluster (storage, tracking) even when "
                             "$RAY_ADDRESS is unset and no role is pinned to a custom resource")
    parser.add_argument("--manifest", help="with --dry-run: also check placement on this KubeRay manifest (YAML "
                                           "file or kustomization directory)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.learning_rate=1e-4")
    args = parser.parse_args(argv)
    if (args.cluster or args.manifest) and not args.dry_run:
        parser.error("--cluster and --manifest only go with --dry-run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        from rlvr_ray.cluster.dry_run import dry_run

        return dry_run(cfg, cluster=args.cluster, manifest=args.manifest)
    from rlvr_ray.run import run_training

    try:
        result = run_training(cfg, watch_head=True)
    except ConfigError as err:  # bad values found only at run time (e.g. model.init_dir), nothing lost
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
