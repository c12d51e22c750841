"""Advantage estimators, modelled on verl's ``core_algos.py``.

Every estimator returns ``(advantages [B, T], returns [B, T])``, both zero off the mask and computed without
gradient. ``returns`` is the value-function target for PPO; for the critic-free estimators it equals the
advantages (as in verl) and is only logged.

Shapes: B completions, T completion tokens (right-padded). ``mask`` [B, T] float is 1 on completion tokens;
``scores`` [B] is one sequence-level reward per completion; ``group_ids`` [B] long gives samples of the same prompt
the same id (any integers, not necessarily contiguous).

Dispatch by name goes through the plain dict :data:`ADVANTAGE_ESTIMATORS`; every entry takes an
:class:`AdvantageInputs` plus the scalars ``gamma``, ``lam`` and ``eps`` and reads only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from rlvr_ray.algo.masked import SumFn, masked_whiten
from rlvr_ray.algo.shaping import varied_groups

DEFAULT_EPS = 1e-6
"""Added to the group std in GRPO so a group of equal rewards gets 0 advantage instead of 0/0."""


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def last_token_index(mask: Tensor) -> Tensor:
    """[B] index of the last 1 in each row of ``mask`` [B, T] (0 for an empty row)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return ((mask > 0) * positions).amax(dim=-1)


def token_level_rewards(scores: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """[B, T] per-token rewards: ``scores`` [B] on the last completion token, minus ``kl_coef * kl`` [B, T] on all.

    This is the PPO / REINFORCE++ reward shaping (OpenRLHF ``compute_reward``): the verifier's outcome reward
    arrives at the end of the sequence and the KL to the reference policy is paid per token. Rows with an empty
    mask get no reward.

    >>> token_level_rewards(torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    tensor([[0., 1., 0.],
            [0., 0., 2.]])
    """
    scores = _as_float(scores, mask)
    rewards = torch.zeros_like(mask, dtype=scores.dtype)
    rows = torch.arange(mask.shape[0], device=mask.device)
    has_tokens = (mask.sum(dim=-1) > 0).to(scores.dtype)
    rewards[rows, last_token_index(mask)] = scores * has_tokens
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl.detach() * mask
    return rewards


def _as_float(x: Tensor, like: Tensor) -> Tensor:
    """Integer or bool rewards become the mask's float dtype; float rewards keep theirs."""
    return x if x.is_floating_point() else x.to(like.dtype if like.is_floating_point() else torch.float32)


def _group_stats(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: (group size [B], group sum [B], group sum of squared deviations from the mean [B])."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    counts = counts.to(scores.dtype)
    sums = torch.zeros_like(counts).index_add_(0, inverse, scores)
    means = sums / counts
    squared_dev = torch.zeros_like(counts).index_add_(0, inverse, (scores - means[inverse]) ** 2)
    return counts[inverse], sums[inverse], squared_dev[inverse]


# ----------------------------------------------------------------------------------------------------------------
# Estimators with explicit arguments


def gae_advantages(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float, global_sum: SumFn | None = None
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (PPO), whitened over the masked tokens.

    token_rewards [B, T], values [B, T], mask [B, T] -> (advantages [B, T], returns [B, T]).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where "t+1" is the next
    *masked* token: positions off the mask neither bootstrap a value nor carry an advantage (verl's variant), so
    right padding behaves as the end of the episode (V = 0 after the last token). ``returns = A_raw + V`` is the
    critic target (before whitening, as in verl/TRL); the advantages are then whitened (over every rank's
    tokens when ``global_sum`` is the all-reduce, see :func:`masked_whiten`).
    """
    with torch.no_grad():
        next_value = torch.zeros_like(values[:, 0])
        next_advantage = torch.zeros_like(values[:, 0])
        raw = torch.zeros_like(values)
        for t in reversed(range(values.shape[-1])):
            on = mask[:, t]
            delta = token_rewards[:, t] + gamma * next_value - values[:, t]
            advantage_t = delta + gamma * lam * next_advantage
            # Off-mask positions pass the running quantities through unchanged (and record 0).
            next_value = on * values[:, t] + (1 - on) * next_value
            next_advantage = on * advantage_t + (1 - on) * next_advantage
            raw[:, t] = on * advantage_t
        returns = (raw + values) * mask
        return masked_whiten(raw, mask, global_sum), returns


def grpo_advantages(
    scores: Tensor, group_ids: Tensor, mask: Tensor, eps: float = DEFAULT_EPS, norm_by_std: bool = True
) -> tuple[Tensor, Tensor]:
    """GRPO: (score - group mean) / (group std + eps), broadcast over the completion tokens.

    scores [B], group_ids [B], mask [B, T] -> (advantages [B, T], returns [B, T] = advantages).

    The std is unbiased (Bessel), like ``torch.std`` in verl. A group of size 1 has score == mean and so gets 0
    advantage (verl instead passes a lone score through unnormalised). ``norm_by_std=False`` is Dr. GRPO.

    A group whose scores are all equal gets exactly 0. Computed as score - sum / count it would not: for a score
    such as 0.3 or 2/3 the float sum of 8 copies divided by 8 misses the score by an ulp, and that ulp divided by
    (std + eps), std being an ulp too, is an advantage of about 0.03-0.06 with the same sign for the whole group.
    """
    with torch.no_grad():
        scores = _as_float(scores, mask)
        counts, sums, squared_dev = _group_stats(scores, group_ids)
        centred = torch.where(varied_groups(scores, group_ids), scores - sums / counts, torch.zeros_like(scores))
        if norm_by_std:
            std = torch.sqrt(squared_dev / (counts - 1).clamp(min=1))
            centred = centred / (std + eps)
        advantages = centred[:, None] * mask
        return advantages, advantages


def dr_grpo_advantages(scores: Tensor, group_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Dr. GRPO (arXiv 2503.20783): score - group mean, no std normalisation.

    scores [B], group_ids [B], mask [B, T] -> (advantages [B, T], returns [B, T] = advantages).
    """
    return grpo_advantages(scores, group_ids, mask, norm_by_std=False)


def rloo_advantages(scores: Tensor, group_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """RLOO (arXiv 2402.14740): score_i - mean of the *other* samples of its group; 0 for a group of size 1.

    scores [B], group_ids [B], mask [B, T] -> (advantages [B, T], returns [B, T] = advantages).
    A group of equal scores gets exactly 0 (see :func:`grpo_advantages`).
    """
    with torch.no_grad():
        scores = _as_float(scores, mask)
        counts, sums, _ = _group_stats(scores, group_ids)
        others_mean = (sums - scores) / (counts - 1).clamp(min=1)
        # A lone sample has no baseline; 0 rather than its raw score keeps it from dominating the batch.
        advantage = torch.where(varied_groups(scores, group_ids), scores - others_mean, torch.zeros_like(scores))
        advantages = advantage[:, None] * mask
        return advantages, advantages


def reinforce_pp_advantages(
    token_rewards: Tensor, mask: Tensor, gamma: float, global_sum: SumFn | None = None
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (arXiv 2501.03262; OpenRLHF ``advantage_estimator=reinforce_plus_plus``).

    token_rewards [B, T], mask [B, T] -> (advantages [B, T], returns [B, T]).

    ``token_rewards`` are r_t = -kl_coef * KL_t on every token plus the outcome reward on the last one (see
    :func:`token_level_rewards`). The discounted return-to-go G_t = r_t + gamma * G_{t+1} (restarting at the
    end of each sequence) is the advantage before normalisation; the advantages are then whitened across *the
    whole batch* of masked tokens (no per-prompt baseline, no critic), which is what distinguishes REINFORCE++
    from GRPO. ``returns`` are the un-whitened G_t. With the batch sharded over ranks, ``global_sum`` (the
    all-reduce) makes the whitening statistics those of the global batch.
    """
    with torch.no_grad():
        running = torch.zeros_like(token_rewards[:, 0])
        returns = torch.zeros_like(token_rewards)
        for t in reversed(range(token_rewards.shape[-1])):
            running = (token_rewards[:, t] + gamma * running) * mask[:, t]
            returns[:, t] = running
        return masked_whiten(returns, mask, global_sum), returns


# ----------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class AdvantageInputs:
    """The tensors an estimator may read; each registry entry checks that the ones it needs are present.

    mask:          [B, T] float, 1 on completion tokens.
    scores:        [B] sequence-level rewards (grpo, dr_grpo, rloo).
    group_ids:     [B] long, one id per prompt (grpo, dr_grpo, rloo).
    token_rewards: [B, T] per-token rewards, see :func:`token_level_rewards` (gae, reinforce_pp).
    values:        [B, T] critic values of the rollout policy (gae).
    """

    mask: Tensor
    scores: Tensor | None = None
    group_ids: Tensor | None = None
    token_rewards: Tensor | None = None
    values: Tensor | None = None


class AdvantageFn(Protocol):
    def __call__(
        self, inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
    ) -> tuple[Tensor, Tensor]: ...


def _need(tensor: Tensor | None, field: str, estimator: str) -> Tensor:
    if tensor is None:
        raise ValueError(f"advantage estimator {estimator!r} needs AdvantageInputs.{field}")
    return tensor


def _run_gae(
    inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
) -> tuple[Tensor, Tensor]:
    rewards = _need(inputs.token_rewards, "token_rewards", "gae")
    return gae_advantages(rewards, _need(inputs.values, "values", "gae"), inputs.mask, gamma, lam, global_sum)


def _run_grpo(
    inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
) -> tuple[Tensor, Tensor]:
    scores = _need(inputs.scores, "scores", "grpo")
    return grpo_advantages(scores, _need(inputs.group_ids, "group_ids", "grpo"), inputs.mask, eps)


def _run_dr_grpo(
    inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
) -> tuple[Tensor, Tensor]:
    scores = _need(inputs.scores, "scores", "dr_grpo")
    return dr_grpo_advantages(scores, _need(inputs.group_ids, "group_ids", "dr_grpo"), inputs.mask)


def _run_rloo(
    inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
) -> tuple[Tensor, Tensor]:
    scores = _need(inputs.scores, "scores", "rloo")
    return rloo_advantages(scores, _need(inputs.group_ids, "group_ids", "rloo"), inputs.mask)


def _run_reinforce_pp(
    inputs: AdvantageInputs, *, gamma: float, lam: float, eps: float, global_sum: SumFn | None
) -> tuple[Tensor, Tensor]:
    rewards = _need(inputs.token_rewards, "token_rewards", "reinforce_pp")
    return reinforce_pp_advantages(rewards, inputs.mask, gamma, global_sum)


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "gae": _run_gae,
    "grpo": _run_grpo,
    "dr_grpo": _run_dr_grpo,
    "rloo": _run_rloo,
    "reinforce_pp": _run_reinforce_pp,
}


def get_advantage_estimator(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(ADVANTAGE_ESTIMATORS)}") from None


def compute_advantages(
    name: str,
    inputs: AdvantageInputs,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    eps: float = DEFAULT_EPS,
    global_sum: SumFn | None = None,
) -> tuple[Tensor, Tensor]:
    """Look up ``name`` and run it: (advantages [B, T], returns [B, T]).

    ``global_sum``: the all-reduce over learner ranks for the batch-whitened estimators (gae, reinforce_pp); the
    group estimators need none, since a rank always holds whole groups.

    >>> mask = torch.ones(4, 2)
    >>> adv, _ = compute_advantages("rloo", AdvantageInputs(mask, scores=torch.tensor([1.0, 0.0, 1.0, 1.0]),
    ...                                                     group_ids=torch.tensor([0, 0, 1, 1])))
    >>> adv[:, 0]
    tensor([ 1., -1.,  0.,  0.])
    """
    return get_advantage_estimator(name)(inputs, gamma=gamma, lam=lam, eps=eps, global_sum=global_sum)
