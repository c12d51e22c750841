"""Stage 5, UPDATE: the Ray Train worker function.

Every rank builds the policy (DDP-wrapped by Ray Train), the frozen reference and the optimizer, and resumes from
the latest checkpoint. Rank 0 then runs the controller loop (it alone talks to rollout actors and verifiers and
broadcasts each scored batch); other ranks follow, training on their share of every batch. The entry point
given to Ray Train, :func:`rlvr_ray.controller.train_loop_per_worker`, lives with the controller, which alone
knows the order of the stages; this module knows nothing of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr_ray.config import RunConfig
from rlvr_ray.learner.batch import TrainBatch, build_train_batch, shard_by_groups
from rlvr_ray.learner.checkpoint import LoopState, load_trainer_state, restore_learner, resume_checkpoint
from rlvr_ray.learner.learner import Learner
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.types import ScoredBatch


class LearnerRank:
    """A Learner plus the collective plumbing: broadcast of the scored batch, sharding, the weights to sync."""

    def __init__(self, learner: Learner, rank: int, world: int, pad_id: int, device: torch.device) -> None:
        self.learner, self.rank, self.world, self.pad_id, self.device = learner, rank, world, pad_id, device

    def update(self, scored: ScoredBatch | None, version: int = 0, last: bool = False) -> tuple[dict[str, float], bool]:
        """Rank 0 passes the scored batch, the learner's weight version (staleness is measured from it) and whether
        this is the run's last step, other ranks None; every rank trains on its share of whole groups and returns
        its stats and rank 0's ``last`` flag."""
        batch = build_train_batch(scored, self.pad_id, version) if scored is not None else None
        if self.world > 1:
            box: list[tuple[TrainBatch | None, bool]] = [(batch, last)]
            torch.distributed.broadcast_object_list(box, src=0)
            whole, last = box[0]
            batch = shard_by_groups(whole, self.rank, self.world)  # type: ignore[arg-type]
        assert batch is not None
        return self.learner.update(batch.to(self.device), self.world), last

    def policy_state(self, on_cpu: bool = True) -> dict[str, torch.Tensor]:
        """HF-named policy weights (what the engines load), detached: on the CPU (a learner on the CPU hands its live
        tensors; the object store's put copies them, ``StoredWeights``), or where they live for an NCCL broadcast."""
        state = self.learner.policy.policy.state_dict()
        return {k: v.detach().to("cpu") if on_cpu else v.detach() for k, v in state.items()}


def build_learner_rank(cfg: RunConfig, init_dir: Any, rank: int, world: int) -> tuple[LearnerRank, LoopState]:
    """Policy from the checkpoint to resume (see :func:`resume_checkpoint`) or ``init_dir``, reference from
    ``init_dir`` (a local path, or a packed policy / object ref to one: materialised here), DDP via Ray Train."""
    import tempfile

    import ray.train.torch

    from rlvr_ray.algo.presets import get_preset
    from rlvr_ray.policy import load_policy, load_vocab, materialize_policy

    init_dir = materialize_policy(init_dir)
    checkpoint = resume_checkpoint(cfg)
    with tempfile.TemporaryDirectory(prefix="rlvr_resume_", ignore_cleanup_errors=True) as tmp:
        local = checkpoint.to_directory(tmp) if checkpoint is not None else None
        policy_dir = str(Path(local) / "policy") if local is not None else init_dir
        module = PolicyWithValue(load_policy(policy_dir), with_value_head=get_preset(cfg.training.algorithm).use_critic)
        trainer_state = load_trainer_state(local) if local is not None else None
    reference = load_policy(init_dir) if cfg.training.kl_coef > 0 else None
    device = ray.train.torch.get_device()
    if reference is not None:
        nn.Module.to(reference, device).requires_grad_(False)
    wrapped = ray.train.torch.prepare_model(module) if world > 1 or device.type != "cpu" else module
    learner = Learner(cfg.training, module, wrapped, reference)
    state = LoopState()
    if trainer_state is not None:
        state = restore_learner(learner, trainer_state)
    return LearnerRank(learner, rank, world, load_vocab(init_dir).pad, device), state
