"""``python -m rlvr_ray.main [--config-name NAME] [--dry-run] [key=value ...]``

Starts a local Ray (or joins the cluster it runs in, e.g. under ``ray job submit``), makes or reuses the SFT warm
start, runs RL, and ends with a before/after table of held-out accuracy and the paths of what it wrote.
"""

from __future__ import annotations

import argparse
import sys

from rlvr_ray.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.main", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-name", default="train_rlvr_model", help="a file in configs/ (without .yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the placement plan and exit; starts nothing")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.learning_rate=1e-4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        from rlvr_ray.placement import format_plan, placement_plan

        print(format_plan(placement_plan(cfg)))
        return 0
    from rlvr_ray.run import run_training

    try:
        result = run_training(cfg)
    except ConfigError as err:  # bad values found only at run time (e.g. model.init_dir), nothing lost
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
