"""Stage 5, UPDATE: the Ray Train worker function.

Every rank builds the policy (DDP-wrapped by Ray Train), the frozen reference and the optimizer, and resumes from
the latest checkpoint. Rank 0 then runs the controller loop (it alone talks to rollout actors and verifiers and
broadcasts each scored batch); other ranks follow, training on their share of every batch. The entry point
given to Ray Train, :func:`rlvr_ray.controller.train_loop_per_worker`, lives with the controller, which alone
knows the order of the stages; this module knows nothing of it.
"""

from __future__ import annotations

import torch
from torch import nn

from rlvr_ray.config import RunConfig
from rlvr_ray.learner.batch import TrainBatch, build_train_batch, shard_by_groups
from rlvr_ray.learner.checkpoint import LoopState, latest_checkpoint, load_trainer_state, restore_learner
from rlvr_ray.learner.learner import Learner
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.types import ScoredBatch


class LearnerRank:
    """A Learner plus the collective plumbing: broadcast of the scored batch, sharding, the weights to sync."""

    def __init__(self, learner: Learner, rank: int, world: int, pad_id: int, device: torch.device) -> None:
        self.learner, self.rank, self.world, self.pad_id, self.device = learner, rank, world, pad_id, device

    def update(self, scored: ScoredBatch | None) -> dict[str, float]:
        """Rank 0 passes the scored batch, other ranks None; every rank trains on its share of whole groups."""
        batch = build_train_batch(scored, self.pad_id) if scored is not None else None
        if self.world > 1:
            box: list[TrainBatch | None] = [batch]
            torch.distributed.broadcast_object_list(box, src=0)
            batch = shard_by_groups(box[0], self.rank, self.world)  # type: ignore[arg-type]
        assert batch is not None
        return self.learner.update(batch.to(self.device), self.world)

    def policy_state(self, on_cpu: bool = True) -> dict[str, torch.Tensor]:
        """HF-named policy weights (what the engines load): CPU copies, or the live tensors for an NCCL broadcast."""
        state = self.learner.policy.policy.state_dict()
        if not on_cpu:
            return {k: v.detach() for k, v in state.items()}
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def build_learner_rank(cfg: RunConfig, init_dir: str, rank: int, world: int) -> tuple[LearnerRank, LoopState]:
    """Policy from the latest checkpoint (or ``init_dir``), reference from ``init_dir``, DDP via Ray Train."""
    import ray.train.torch

    from rlvr_ray.algo.presets import get_preset
    from rlvr_ray.policy import load_policy, load_vocab

    checkpoint = latest_checkpoint(cfg.output_dir) if cfg.resume else None
    policy_dir = str(checkpoint / "policy") if checkpoint is not None else init_dir
    module = PolicyWithValue(load_policy(policy_dir), with_value_head=get_preset(cfg.training.algorithm).use_critic)
    reference = load_policy(init_dir) if cfg.training.kl_coef > 0 else None
    device = ray.train.torch.get_device()
    if reference is not None:
        nn.Module.to(reference, device).requires_grad_(False)
    wrapped = ray.train.torch.prepare_model(module) if world > 1 or device.type != "cpu" else module
    learner = Learner(cfg.training, module, wrapped, reference)
    state = LoopState()
    if checkpoint is not None:
        state = restore_learner(learner, load_trainer_state(checkpoint))
    return LearnerRank(learner, rank, world, load_vocab(init_dir).pad, device), state
