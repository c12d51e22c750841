"""Supervised warm start: next-token prediction on generated full equations (the seed's supervised stage).

The loss covers completion tokens only by default: a policy also trained on prompt tokens learns to continue the
expression, and at temperature 1 it then often fails to emit ``=`` (its sampled accuracy falls far below greedy).
``sft.steps`` is the budget that stops training at partial competence, leaving RL room to improve.

    python -m rlvr_ray.sft --config-name train_rlvr_model [sft.steps=800] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr_ray.config import ConfigError, ModelConfig, RunConfig, SFTConfig, TaskConfig, load_config
from rlvr_ray.task.split import SPLIT_ID

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

    from rlvr_ray.task.vocab import Vocab
    from rlvr_ray.tracking import Tracker


PROBE_N, PROBE_SEED = 64, 777  # the SFT probe set: small, and from the train split (never an eval prompt)
TrainFn = Callable[[TaskConfig, ModelConfig, SFTConfig, Path, "Tracker | None"], Path]


def sft_batch(
    vocab: Vocab, task: TaskConfig, batch_size: int, seed: int, loss_on_prompt: bool
) -> dict[str, torch.Tensor]:
    """One batch of full equations: input_ids [B, L], labels [B, L] (-100 where no loss), attention_mask [B, L].

    Drawn from the train split: no held-out eval prompt is ever trained on.
    """
    import torch

    from rlvr_ray.task.rpn import generate_problems

    problems = generate_problems(vocab, batch_size, task.complexity_range, seed, split="train")
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


def sft_threads(sft: SFTConfig) -> int:
    """``sft.num_threads``, or every core this process may run on."""
    if sft.num_threads is not None:
        return sft.num_threads
    if sys.platform.startswith("linux"):
        return len(os.sched_getaffinity(0))  # the cores this process may run on (a container's or taskset's)
    return os.cpu_count() or 1


def train_sft(
    task: TaskConfig,
    model_cfg: ModelConfig,
    sft: SFTConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
) -> Path:
    """Train a fresh policy for at most ``sft.steps`` steps, stopping early once its greedy accuracy on a probe set
    reaches ``sft.target_accuracy``; save it as an HF directory at ``out_dir``.

    Runs with ``sft.num_threads`` torch threads (:func:`sft_threads`).
    The progress bar shows the loss smoothed over the last ~10 steps at every refresh, and the latest probe.
    """
    import torch
    from tqdm import tqdm

    from rlvr_ray.policy import build_model, save_policy
    from rlvr_ray.task.vocab import Vocab

    torch.set_num_threads(sft_threads(sft))
    torch.manual_seed(sft.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vocab = Vocab(task.p, tuple(task.operators))
    model = build_model(model_cfg, vocab, seed=sft.seed)
    torch.nn.Module.to(model, device)  # (transformers' typed .to() rejects a torch.device for mypy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.learning_rate, weight_decay=0.01)
    bar = tqdm(range(sft.steps), desc="sft", file=sys.stderr, mininterval=2.0)
    started, step = time.time(), -1
    shown: dict[str, float] = {}  # what the bar shows: the smoothed loss, the latest probe accuracy
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
        shown["loss"] = smoothed(shown.get("loss"), metrics["sft/loss"])
        if sft.target_accuracy is not None and (step + 1) % sft.eval_every == 0:
            metrics["sft/probe_accuracy"] = probe_accuracy(model, vocab, task, Path(out_dir).with_suffix(".probe"))
            shown["probe"] = metrics["sft/probe_accuracy"]
        bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)  # drawn at the next refresh
        if tracker is not None and (step % sft.log_every == 0 or "sft/probe_accuracy" in metrics):
            tracker.log_metrics(metrics, step)
        if metrics.get("sft/probe_accuracy", -1.0) >= (sft.target_accuracy or 2.0):
            break  # partial competence reached: leave the rest for RL
    bar.close()
    model.eval()
    torch.nn.Module.to(model, "cpu")
    shutil.rmtree(Path(out_dir).with_suffix(".probe"), ignore_errors=True)
    out = save_policy(model, vocab, out_dir)
    if tracker is not None:
        tracker.log_metrics({"sft/seconds": time.time() - started, "sft/steps": step + 1}, step + 1)
    return out


LOSS_SMOOTHING = 0.1
"""Weight of the newest step in the progress bar's loss (an exponential moving average over ~10 steps)."""


def smoothed(previous: float | None, value: float) -> float:
    """The progress bar's moving-average loss after a step with loss ``value`` (the first step starts it)."""
    return value if previous is None else (1 - LOSS_SMOOTHING) * previous + LOSS_SMOOTHING * value


def probe_accuracy(model: LlamaForCausalLM, vocab: Vocab, task: TaskConfig, probe_dir: Path) -> float:
    """Mean greedy exact-answer accuracy over the task's complexities on a small probe set of distinct prompts from
    the train split (never the held-out eval set: the stopping rule must not peek at it)."""
    import torch

    from rlvr_ray.eval import evaluate
    from rlvr_ray.policy import save_policy
    from rlvr_ray.rollout.torch_engine import TorchEngine

    device = next(model.parameters()).device
    torch.nn.Module.to(model, "cpu")
    save_policy(model, vocab, probe_dir)
    torch.nn.Module.to(model, device)
    low, high = task.complexity_range
    generate = TorchEngine(str(probe_dir)).generate
    rows = evaluate(generate, vocab, range(low, high + 1), PROBE_N, PROBE_SEED, 64, split="train")
    return sum(r.accuracy for r in rows) / len(rows)


WARM_START_FILE = "warm_start.json"
"""Inside each warm start: the task, model and SFT config it was trained with (what its directory name hashes)."""


def warm_start_key(cfg: RunConfig) -> tuple[str, dict[str, Any]]:
    """``(short hash, keyed config)``: everything that shapes the SFT policy (task, architecture, SFT settings)."""
    keyed = {
        "generative_process": cfg.generative_process.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json", exclude={"init_dir"}),
        "sft": cfg.sft.model_dump(mode="json", exclude={"log_every", "num_threads"}),
        "split": SPLIT_ID,  # which prompts SFT may train on (the eval side of the split is never seen)
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12], keyed


def warm_start_path(cfg: RunConfig) -> Path:
    """``WARM_START_DIR/sft-<hash>``: one warm start per task + model + SFT config, so a changed config never
    reuses another config's policy."""
    return Path(cfg.warm_start_dir) / f"sft-{warm_start_key(cfg)[0]}"


def ensure_warm_start(cfg: RunConfig, tracker: Tracker | None = None, train: TrainFn | None = None) -> Path:
    """The policy RL starts from: ``model.init_dir`` if set, else the warm start of this config (made once, in
    :func:`warm_start_path` on this host).

    ``train`` runs the SFT (default: :func:`train_sft` in this process; the driver passes a Ray task that returns
    the policy's bytes and writes them here).
    """
    if cfg.model.init_dir:
        path = Path(cfg.model.init_dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.init_dir: {path} is not a saved policy directory (no config.json)")
        return path
    path = warm_start_path(cfg)
    _, keyed = warm_start_key(cfg)
    if (path / "model.safetensors").is_file():
        stored = path / WARM_START_FILE
        if not stored.is_file() or json.loads(stored.read_text()) != keyed:
            raise ConfigError(f"warm start {path} was not made from this config ({WARM_START_FILE} differs): move it")
        return path
    print(f"[sft] no warm start for this config at {path}: training one ({cfg.sft.steps} steps)", file=sys.stderr)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (train or train_sft)(cfg.generative_process, cfg.model, cfg.sft, tmp, tracker)
    (tmp / WARM_START_FILE).write_text(json.dumps(keyed, indent=1, sort_keys=True))
    tmp.rename(path)  # atomic: an interrupted SFT never leaves a half-written warm start behind
    return path


def train_sft_packed(
    task: TaskConfig, model_cfg: ModelConfig, sft: SFTConfig, tracker: Tracker | None
) -> dict[str, bytes]:
    """:func:`train_sft` into a local temporary directory, returned as ``pack_policy_dir`` bytes: what a remote
    SFT task sends back to the driver through the object store (no shared filesystem)."""
    import tempfile

    from rlvr_ray.policy import pack_policy_dir

    with tempfile.TemporaryDirectory(prefix="rlvr_sft_") as tmp:
        return pack_policy_dir(train_sft(task, model_cfg, sft, Path(tmp) / "policy", tracker))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.sft", description="Train the SFT warm start.")
    parser.add_argument("--config-name", default="train_rlvr_model")
    parser.add_argument("--out", default=None, help="output directory (default: this config's warm start under "
                        "warm_start_dir, reused when it exists)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = train_sft(cfg.generative_process, cfg.model, cfg.sft, args.out) if args.out else ensure_warm_start(cfg)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
