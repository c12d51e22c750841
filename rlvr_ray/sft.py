"""Supervised warm start: next-token prediction on generated full equations (the seed's supervised stage).

The loss covers completion tokens only by default: a policy also trained on prompt tokens learns to continue the
expression, and at temperature 1 it then often fails to emit ``=`` (its sampled accuracy falls far below greedy).
``sft.steps`` is the budget that stops training at partial competence, leaving RL room to improve.

    python -m rlvr_ray.sft --config-name train_rlvr_model [sft.steps=800] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlvr_ray.config import ConfigError, ModelConfig, RunConfig, SFTConfig, TaskConfig, load_config

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

    from rlvr_ray.task.vocab import Vocab
    from rlvr_ray.tracking import Tracker


PROBE_N, PROBE_SEED = 64, 777  # the SFT probe set: small, and disjoint from the held-out eval seed stream
TrainFn = Callable[[TaskConfig, ModelConfig, SFTConfig, Path, "Tracker | None"], Path]


def sft_batch(
    vocab: Vocab, task: TaskConfig, batch_size: int, seed: int, loss_on_prompt: bool
) -> dict[str, torch.Tensor]:
    """One batch of full equations: input_ids [B, L], labels [B, L] (-100 where no loss), attention_mask [B, L]."""
    import torch

    from rlvr_ray.task.rpn import generate_problems

    problems = generate_problems(vocab, batch_size, task.complexity_range, seed)
    ids, lengths = problems.full_sequences()
    input_ids = torch.from_numpy(ids).long()
    positions = torch.arange(input_ids.shape[1])[None, :]
    attention = positions < torch.from_numpy(lengths)[:, None]
    labels = input_ids.masked_fill(~attention, -100)
    if not loss_on_prompt:
        labels = labels.masked_fill(positions < torch.from_numpy(problems.prompt_lengths)[:, None], -100)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention.long()}


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` then cosine decay to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_sft(
    task: TaskConfig, model_cfg: ModelConfig, sft: SFTConfig, out_dir: str | Path, tracker: Tracker | None = None
) -> Path:
    """Train a fresh policy for at most ``sft.steps`` steps, stopping early once its greedy accuracy on a probe set
    reaches ``sft.target_accuracy``; save it as an HF directory at ``out_dir``."""
    import torch
    from tqdm import tqdm

    from rlvr_ray.policy import build_model, save_policy
    from rlvr_ray.task.vocab import Vocab

    torch.manual_seed(sft.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vocab = Vocab(task.p, tuple(task.operators))
    model = build_model(model_cfg, vocab, seed=sft.seed)
    torch.nn.Module.to(model, device)  # (transformers' typed .to() rejects a torch.device for mypy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.learning_rate, weight_decay=0.01)
    bar = tqdm(range(sft.steps), desc="sft", file=sys.stderr, mininterval=2.0)
    started, metrics = time.time(), {}
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, sft.steps, sft.warmup_steps, sft.learning_rate)
        batch = sft_batch(vocab, task, sft.batch_size, sft.seed * 1_000_003 + step, sft.loss_on_prompt)
        model.train()
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        metrics = {"sft/loss": loss.item(), "sft/lr": optimizer.param_groups[0]["lr"]}
        if sft.target_accuracy is not None and (step + 1) % sft.eval_every == 0:
            metrics["sft/probe_accuracy"] = probe_accuracy(model, vocab, task, Path(out_dir).with_suffix(".probe"))
        if step % sft.log_every == 0 or "sft/probe_accuracy" in metrics:
            bar.set_postfix({k.split("/")[1]: f"{v:.3f}" for k, v in metrics.items() if k != "sft/lr"})
            if tracker is not None:
                tracker.log_metrics(metrics, step)
        if metrics.get("sft/probe_accuracy", -1.0) >= (sft.target_accuracy or 2.0):
            break  # partial competence reached: leave the rest for RL
    model.eval()
    torch.nn.Module.to(model, "cpu")
    shutil.rmtree(Path(out_dir).with_suffix(".probe"), ignore_errors=True)
    out = save_policy(model, vocab, out_dir)
    if tracker is not None:
        tracker.log_metrics({"sft/seconds": time.time() - started, "sft/steps": step + 1}, step + 1)
    return out


def probe_accuracy(model: LlamaForCausalLM, vocab: Vocab, task: TaskConfig, probe_dir: Path) -> float:
    """Mean greedy exact-answer accuracy over the task's complexities on a small probe set (not the eval set)."""
    import torch

    from rlvr_ray.eval import evaluate
    from rlvr_ray.policy import save_policy
    from rlvr_ray.rollout.torch_engine import TorchEngine

    device = next(model.parameters()).device
    torch.nn.Module.to(model, "cpu")
    save_policy(model, vocab, probe_dir)
    torch.nn.Module.to(model, device)
    low, high = task.complexity_range
    rows = evaluate(TorchEngine(str(probe_dir)).generate, vocab, range(low, high + 1), PROBE_N, PROBE_SEED, 64)
    return sum(r.accuracy for r in rows) / len(rows)


def ensure_warm_start(cfg: RunConfig, tracker: Tracker | None = None, train: TrainFn | None = None) -> Path:
    """The policy RL starts from: ``model.init_dir`` if set, else the warm start in ``warm_start_dir`` (made once).

    ``train`` runs the SFT (default: :func:`train_sft` in this process; the driver passes a Ray task).
    """
    if cfg.model.init_dir:
        path = Path(cfg.model.init_dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.init_dir: {path} is not a saved policy directory (no config.json)")
        return path
    path = Path(cfg.warm_start_dir)
    if (path / "model.safetensors").is_file():
        return path
    print(f"[sft] no warm start at {path}: training one ({cfg.sft.steps} steps)", file=sys.stderr)
    tmp = path.with_name(path.name + ".partial")
    (train or train_sft)(cfg.generative_process, cfg.model, cfg.sft, tmp, tracker)
    tmp.rename(path)  # atomic: an interrupted SFT never leaves a half-written warm start behind
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.sft", description="Train the SFT warm start.")
    parser.add_argument("--config-name", default="train_rlvr_model")
    parser.add_argument("--out", default=None, help="output directory (default: the config's warm_start_dir)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    out = train_sft(cfg.generative_process, cfg.model, cfg.sft, args.out or cfg.warm_start_dir)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
