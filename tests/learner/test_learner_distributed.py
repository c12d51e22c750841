"""Two real learner ranks (torch.distributed, gloo on 127.0.0.1, one CPU thread each; no Ray): every rank takes
the same early-stopping decision, and 2 DDP ranks compute the same gradient as 1 process on the whole batch."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_learner import TINY, VOCAB, engine_rollouts
from torch.nn.parallel import DistributedDataParallel

from rlvr_ray.config import TrainingConfig
from rlvr_ray.learner.batch import TrainBatch, build_train_batch, shard_by_groups
from rlvr_ray.learner.learner import Learner
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.policy import build_model, load_policy, save_policy

torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_rank_learner(model_dir: Path, settings: dict, ddp: bool) -> Learner:
    cfg = TrainingConfig(**settings)
    module = PolicyWithValue(load_policy(model_dir), with_value_head=cfg.algorithm == "ppo")
    wrapped = DistributedDataParallel(module) if ddp else module
    return Learner(cfg, module, wrapped, None)


def rank_main(rank: int, world: int, port: int, workdir: str, settings: dict, ddp: bool) -> None:
    """One learner rank: its share of whole groups, one update; writes its stats and gradients."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        work = Path(workdir)
        batch: TrainBatch = torch.load(work / "batch.pt", weights_only=False)
        learner = make_rank_learner(work / "policy", settings, ddp)
        stats = learner.update(shard_by_groups(batch, rank, world), world)
        next_lr = learner.optimizer.param_groups[0]["lr"]
        (work / f"stats{rank}.json").write_text(json.dumps({**stats, "next_lr": next_lr}))
        grads = {k: p.grad for k, p in learner.policy.named_parameters() if p.grad is not None}
        torch.save(grads, work / f"rank{rank}.pt")
        # Both ranks finish before either tears the group down: a rank that destroyed its group while the other
        # still used the connection can take gloo's background thread down with std::terminate (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(workdir: Path, settings: dict, ddp: bool, world: int = 2) -> None:
    mp.spawn(rank_main, args=(world, free_port(), str(workdir), settings, ddp), nprocs=world, join=True)


def setup_workdir(tmp_path: Path, rewards: list[float], cut: bool = False) -> TrainBatch:
    """The batch of engine rollouts; ``cut``: rank 1's group (samples 4-7) cut to 1-4 completion tokens, so the
    two ranks hold different token counts (a per-rank token mean then differs from the global one)."""
    model_dir = save_policy(build_model(TINY, VOCAB, seed=1), VOCAB, tmp_path / "policy")
    scored = engine_rollouts(model_dir, rewards)
    if cut:
        for i, keep in zip(range(4, 8), (1, 2, 3, 4), strict=True):
            scored.rollouts.completion_ids[i] = scored.rollouts.completion_ids[i][:keep]
            scored.rollouts.logprobs[i] = scored.rollouts.logprobs[i][:keep]
    batch = build_train_batch(scored, VOCAB.pad)
    torch.save(batch, tmp_path / "batch.pt")
    return batch


def test_early_stopping_and_the_lr_guard_take_the_same_decision_on_every_rank(tmp_path: Path) -> None:
    # Rank 0 holds a group with a learning signal, rank 1 a group of equal rewards (zero advantage, zero gradient):
    # without DDP only rank 0's policy moves, so only its own approx-KL passes target_kl. Deciding on the
    # rank's own shard, rank 0 stops after one epoch and rank 1 runs all four; the global KL stops both. The same
    # for the learning-rate guard: on its own shard rank 1 (KL 0) would keep the rate and rank 0 cut it.
    setup_workdir(tmp_path, [1, 0, 0, 1, 1, 1, 1, 1])
    settings = {
        "algorithm": "grpo", "batch_size": 8, "group_size": 4, "mini_batch_size": 4, "learning_rate": 0.05,
        "ppo_epochs": 4, "early_stopping": True, "target_kl": 1e-6, "lr_control": "kl_adaptive",
        "lr_control_target_kl": 1e-6,
    }  # fmt: skip
    run_ranks(tmp_path, settings, ddp=False)
    stats = [json.loads((tmp_path / f"stats{r}.json").read_text()) for r in range(2)]
    assert stats[0]["ppo/optimizer_steps"] == stats[1]["ppo/optimizer_steps"] == 2.0  # 1 epoch of 2 mini-batches
    assert stats[0]["ppo/early_stopped"] == stats[1]["ppo/early_stopped"] == 1.0
    assert stats[0]["update/step_kl"] == stats[1]["update/step_kl"] > 2e-6
    assert stats[0]["next_lr"] == stats[1]["next_lr"] == pytest.approx(0.05 / 1.5, rel=1e-12)


@pytest.mark.parametrize(
    ("algorithm", "rewards"),
    [
        ("rloo", [1, 0, 0, 1, 0, 1, 1, 1]),
        ("grpo", [1, 0, 0, 1, 0.3, 0.3, 0.3, 0.3]),
        ("reinforce_pp", [1, 0, 0, 1, 0, 1, 1, 1]),
        ("dapo", [1, 0, 0, 1, 1, 1, 1, 1]),
    ],
)
def test_two_ddp_ranks_give_the_single_process_gradient(tmp_path: Path, algorithm: str, rewards: list[float]) -> None:
    # token_mean over the global batch and REINFORCE++'s global whitening: a per-rank mean or whitening differs
    # whenever the ranks' shards differ in token counts or reward statistics. dapo: rank 1's group is dropped;
    # grpo: rank 1's group has equal scores, so that rank computes no sample but must still join the all-reduce.
    # Two micro-batches per rank: gradients accumulate locally and are all-reduced once.
    batch = setup_workdir(tmp_path, rewards, cut=True)
    counts = [float(batch.mask[:4].sum()), float(batch.mask[4:].sum())]
    assert counts[0] != counts[1]
    settings = {
        "algorithm": algorithm, "batch_size": 8, "group_size": 4, "mini_batch_size": 8, "learning_rate": 1e-2,
        "max_grad_norm": 1e6, "gradient_accumulation_steps": 2,
    }  # fmt: skip
    single = make_rank_learner(tmp_path / "policy", settings, ddp=False)
    single.update(batch, 1)
    run_ranks(tmp_path, settings, ddp=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # Gradients, not parameters: Adam's first step g / (|g| + 1e-8) turns rounding in near-zero gradients into
    # visible parameter differences.
    for name, param in single.policy.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(ranks[0][name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(ranks[1][name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
