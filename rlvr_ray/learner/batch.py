"""Scored rollouts -> padded tensors for the learner.

Alignment: a sequence of length L gives per-token arrays of length L-1; index j holds the logprob of token j+1,
predicted from position j. ``mask[j] = 1`` exactly where token j+1 is a generated (completion) token.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from rlvr_ray.types import ScoredBatch


@dataclass
class TrainBatch:
    """N sequences, right-padded to length L.

    input_ids      [N, L]   long, prompt + completion, padded with pad_id
    attention_mask [N, L]   long
    mask           [N, L-1] float, 1 on completion tokens (shifted alignment, see module docstring)
    engine_logp    [N, L-1] float, the rollout engine's logprobs of those tokens (0 elsewhere)
    scores         [N]      float, the training reward of each sequence
    group_ids      [N]      long
    staleness      [N]      long, learner version minus the policy version that generated the sample (0: on-policy)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    engine_logp: torch.Tensor
    scores: torch.Tensor
    group_ids: torch.Tensor
    staleness: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, index: slice | torch.Tensor) -> TrainBatch:
        return TrainBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device) -> TrainBatch:
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def build_train_batch(scored: ScoredBatch, pad_id: int, learner_version: int | None = None) -> TrainBatch:
    """Pad prompt+completion ids and place the engine logprobs on the completion positions.

    ``learner_version``: the weight version of the policy about to be updated; each sample's staleness is that
    minus the version that generated it. None takes the newest version in the batch (every sample of a
    synchronous step is then on-policy). A sample newer than the learner is an error.
    """
    rollouts = scored.rollouts
    versions = np.asarray(rollouts.policy_version, dtype=np.int64)
    version = int(versions.max()) if learner_version is None else learner_version
    if versions.max() > version:
        raise ValueError(f"samples of policy version {int(versions.max())} are newer than learner version {version}")
    seqs = [p + c for p, c in zip(rollouts.prompt_ids, rollouts.completion_ids, strict=True)]
    n, length = len(seqs), max(len(s) for s in seqs)
    input_ids = np.full((n, length), pad_id, dtype=np.int64)
    attention = np.zeros((n, length), dtype=np.int64)
    mask = np.zeros((n, length - 1), dtype=np.float32)
    engine_logp = np.zeros((n, length - 1), dtype=np.float32)
    for i, (seq, prompt, logp) in enumerate(zip(seqs, rollouts.prompt_ids, rollouts.logprobs, strict=True)):
        input_ids[i, : len(seq)] = seq
        attention[i, : len(seq)] = 1
        start, stop = len(prompt) - 1, len(seq) - 1
        mask[i, start:stop] = 1.0
        engine_logp[i, start:stop] = logp
    return TrainBatch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention),
        mask=torch.from_numpy(mask),
        engine_logp=torch.from_numpy(engine_logp),
        scores=torch.from_numpy(np.asarray(scored.scores.reward, dtype=np.float32)),
        group_ids=torch.from_numpy(np.asarray(rollouts.group_ids, dtype=np.int64)),
        staleness=torch.from_numpy(version - versions),
    )


def shard_by_groups(batch: TrainBatch, rank: int, world: int) -> TrainBatch:
    """Rank's contiguous share of whole groups (group-normalised advantages need every sample of a prompt)."""
    groups = torch.unique_consecutive(batch.group_ids)
    if len(groups) % world:
        raise ValueError(f"{len(groups)} prompts per step cannot be split evenly over {world} learner workers")
    per_rank = len(groups) // world
    keep = torch.isin(batch.group_ids, groups[rank * per_rank : (rank + 1) * per_rank])
    return batch.select(keep)
