"""RL against continued SFT from one warm start, at equal train time, side by side on the same box.

    python bench/rl_vs_sft.py --warm-start outputs/warm_start --budget-s 600 --eval-every-s 100 \\
        --eval-complexities 1-6
    python bench/rl_vs_sft.py --smoke        # plumbing check: tiny SFT policy (test config), 30 s per side

The two sides run one after the other, each for ``--budget-s`` seconds of TRAIN time (held-out eval excluded),
each with the whole machine:

- **sft**: the warm start trained further by the project's own SFT step (``rlvr_ray.sft.sft_batch``: full
  equations from the train split, the config's SFT batch size, loss on answer tokens unless the config says
  otherwise), with ``--sft-threads`` torch threads (default: every core) and AdamW at a constant learning rate:
  ``--sft-lr``, by default the rate the config's own SFT schedule had reached at ``--sft-from-step`` (where the
  warm start's SFT stopped; the default warm start stops at step 700, lr 9.1e-4). Its data stream continues from
  that step, so no batch of the warm start's SFT is replayed.
- **rl**: ``python -m rlvr_ray.main model.init_dir=WARM training.time_budget_s=BUDGET`` with the config's RL
  settings unchanged (``bench/peer_trl.py``'s project side).

Both are evaluated by the same evaluator (``rlvr_ray.eval.evaluate_run``, greedy, the held-out split, the config's
eval section: pass ``--eval-complexities 1-6`` to see k5-6 extrapolation, which neither side trains on). Outputs
under ``--out``: ``rl_vs_sft.json`` (settings, machine, both curves with per-complexity accuracy),
``rl_vs_sft.png`` (mean k1-4 and, when evaluated, mean k5-6 against train seconds) and ``rl_vs_sft.md`` (the
curves as a table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlvr_ray.config import RunConfig, load_config

SMOKE_BUDGET_S = 30.0


# bench/ is a folder of scripts, not a package: bench/peer_trl.py is imported as a sibling by name (one module,
# shared with its tests, which load it under the same name)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_trl as peer  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------
# The SFT side


def default_sft_lr(cfg: RunConfig, from_step: int) -> float:
    """The learning rate the config's SFT schedule had reached at ``from_step`` (held constant from there)."""
    from rlvr_ray.sft import lr_at

    s = cfg.sft
    return lr_at(min(from_step, s.steps - 1), s.steps, s.warmup_steps, s.learning_rate)


def run_sft(
    warm: Path, cfg: RunConfig, budget_s: float, every_s: float, lr: float, from_step: int, threads: int
) -> Any:
    """Continued SFT from ``warm`` for ``budget_s`` train seconds, evaluated every ``every_s`` train seconds."""
    import torch

    from rlvr_ray.policy import load_policy, load_vocab
    from rlvr_ray.sft import sft_batch

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.sft.seed + from_step)
    vocab, model = load_vocab(warm), load_policy(warm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    clock = peer.TrainClock()
    schedule = peer.IntervalSchedule(clock, peer.held_out_evaluator(warm, cfg), every_s, budget_s)
    started, step = time.perf_counter(), 0
    schedule.begin(model)
    while True:
        batch = sft_batch(vocab, cfg.generative_process, cfg.sft.batch_size,
                          cfg.sft.seed * 1_000_003 + from_step + step, cfg.sft.loss_on_prompt)  # fmt: skip
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.eval()
        step += 1
        if schedule.after_step(model, step):
            break
    train_s = clock.elapsed()
    settings = {"learning_rate": lr, "from_step": from_step, "batch_size": cfg.sft.batch_size,
                "loss_on_prompt": cfg.sft.loss_on_prompt, "threads": threads}  # fmt: skip
    notes = [f"{train_s / max(step, 1):.3f} train s per SFT step", f"{threads} torch thread(s), one process",
             peer.load_note()]  # fmt: skip
    return peer.SideResult("sft", schedule.curve, step, train_s, time.perf_counter() - started, settings, notes)


# ----------------------------------------------------------------------------------------------------------------
# Report


def mean_over(accuracy: dict[int, float], ks: Sequence[int]) -> float | None:
    values = [accuracy[k] for k in ks if k in accuracy]
    return sum(values) / len(values) if values else None


def curve_table(sides: Sequence[Any], ks: Sequence[int]) -> str:
    """Markdown: one row per evaluation of each side (train s, step, accuracy per k, mean k1-4, mean k5-6)."""
    head = ["side", "train s", "step", *[f"k{k}" for k in ks], "mean k1-4", "mean k5-6"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for side in sides:
        for p in side.curve:
            far = mean_over(p.accuracy, (5, 6))
            per_k = [f"{p.accuracy.get(k, float('nan')):.3f}" for k in ks]
            cells = [side.name, f"{p.train_s:.0f}", str(p.step), *per_k, f"{p.mean_k1_4:.3f}",
                     "-" if far is None else f"{far:.3f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(sides: Sequence[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side in sides:
        xs = [p.train_s for p in side.curve]
        line = ax.plot(xs, [p.mean_k1_4 for p in side.curve], marker="o", label=f"{side.name}: mean k1-4")[0]
        far = [mean_over(p.accuracy, (5, 6)) for p in side.curve]
        if all(v is not None for v in far) and far:
            ax.plot(xs, far, marker="s", linestyle="--", color=line.get_color(), label=f"{side.name}: mean k5-6")
    ax.set_xlabel("train seconds (held-out eval excluded)")
    ax.set_ylabel("held-out greedy accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, args: argparse.Namespace, sides: Sequence[Any], ks: Sequence[int]) -> str:
    table = curve_table(sides, ks)
    report = {"warm_start": str(args.warm_start), "config_name": args.config_name, "overrides": args.overrides,
              "budget_s": args.budget_s, "machine": peer.machine_info(),
              **{side.name: asdict(side) for side in sides}}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "rl_vs_sft.json").write_text(json.dumps(report, indent=2))
    (out / "rl_vs_sft.md").write_text(table + "\n")
    plot(sides, out / "rl_vs_sft.png")
    return table


# ----------------------------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-start", type=Path, help="HF policy directory written by rlvr_ray (SFT or a run)")
    p.add_argument("--config-name", default="train_rlvr_model")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override (both sides)")
    p.add_argument("--budget-s", type=float, default=600.0, help="train seconds per side")
    p.add_argument("--eval-every-s", type=float, default=100.0, help="SFT: train seconds between held-out evals")
    p.add_argument("--rl-eval-every", type=int, default=150, help="RL: steps between held-out evals")
    p.add_argument("--eval-complexities", default=None, help="e.g. 1-6: held-out complexities of both sides")
    p.add_argument("--sft-lr", type=float, default=None, help="default: the SFT schedule's lr at --sft-from-step")
    p.add_argument("--sft-from-step", type=int, default=700, help="the SFT step the warm start stopped at")
    p.add_argument("--sft-threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--sides", default="sft,rl", help="run only some sides (sft,rl)")
    p.add_argument("--out", type=Path, default=Path("outputs/rl_vs_sft"))
    p.add_argument("--smoke", action="store_true", help=f"tiny test-config policy, {SMOKE_BUDGET_S:.0f} s per side")
    args = p.parse_args(argv)
    if args.smoke:
        args.config_name, args.budget_s, args.eval_every_s = "train_rlvr_test", SMOKE_BUDGET_S, 10.0
        args.rl_eval_every = 50
    elif args.warm_start is None:
        p.error("--warm-start is required (or --smoke)")
    if set(args.sides.split(",")) - {"sft", "rl"}:
        p.error(f"--sides {args.sides!r}: allowed: sft, rl (comma-separated)")
    if args.eval_complexities:
        from rlvr_ray.eval import parse_complexities

        try:
            args.overrides.append(f"eval.complexities={parse_complexities(args.eval_complexities)}")
        except ValueError as err:
            p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ValueError as err:  # ConfigError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    warm = peer.smoke_warm_start(args.out) if args.smoke else args.warm_start
    if not (Path(warm) / "config.json").is_file():
        print(f"error: --warm-start {warm}: not a policy directory (no config.json)", file=sys.stderr)
        return 2
    args.warm_start, sides = warm, []
    lr = args.sft_lr if args.sft_lr is not None else default_sft_lr(cfg, args.sft_from_step)
    if "sft" in args.sides.split(","):
        sides.append(run_sft(warm, cfg, args.budget_s, args.eval_every_s, lr, args.sft_from_step, args.sft_threads))
        write_report(args.out, args, sides, cfg.eval.complexities)  # the SFT half survives a failed RL run
    if "rl" in args.sides.split(","):
        try:
            rl = peer.run_project(args.config_name, args.overrides, warm, cfg, args.budget_s, args.rl_eval_every,
                                  args.out, args.budget_s * 2 + 600)  # fmt: skip
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        rl.name = "rl"
        sides.append(rl)
    print(write_report(args.out, args, sides, cfg.eval.complexities))
    print(f"[rl_vs_sft] wrote {args.out / 'rl_vs_sft.json'}, .png, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
