"""Policy and value losses and the aggregation of a per-token loss matrix into a scalar.

Shapes: ``logp``, ``old_logp``, ``adv``, ``values``, ``returns``, ``mask`` are [B, T] (``mask`` float, 1 on
completion tokens); ``logits`` are [B, T, V]. Losses are to be *minimised*. Stats are plain floats for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr_ray.algo.masked import masked_mean, masked_sum

MAX_LOG_RATIO = 20.0
"""The log importance ratio is clamped to +-20 before exp so one stale token cannot produce inf (as in verl)."""


# ----------------------------------------------------------------------------------------------------------------
# Aggregation
#
# Every mode is numerator / denominator. The numerator is a sum over sequences (or tokens), so it adds up over
# micro-batches and ranks; the denominator is the number of masked tokens (token_mean) or of sequences (the
# seq_* modes). A learner passes the *global* denominator of the mini-batch (all micro-batches, all ranks), so the
# accumulated gradient is that of the mini-batch's loss, however it is split. Without one, the local count is used.


def token_sum(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """token_mean's numerator: the sum of the masked tokens. [B, T] -> scalar."""
    return masked_sum(loss_mat, mask)


def seq_token_mean_sum(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """seq_mean_token_mean's numerator: the sum over sequences of each one's token mean. [B, T] -> scalar.

    A sequence with no completion token contributes 0 (and still counts in the local denominator B).
    """
    return masked_mean(loss_mat, mask, dim=-1).sum()


def seq_token_sum_norm_sum(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """seq_mean_token_sum_norm's numerator (Dr. GRPO): sum over sequences of token sum / a constant.

    The constant is ``norm_length`` when given, else the padded length T. Pass the configured maximum generation
    length so the normaliser does not change with how a micro-batch happens to be padded.
    """
    constant = norm_length if norm_length is not None else loss_mat.shape[-1]
    return ((loss_mat * mask).sum(dim=-1) / constant).sum()


@dataclass(frozen=True)
class LossAggregator:
    """numerator(loss_mat, mask, norm_length) -> scalar sum; per_sequence: the denominator counts sequences
    (True) or masked tokens (False)."""

    numerator: Callable[[Tensor, Tensor, int | None], Tensor]
    per_sequence: bool


LOSS_AGGREGATORS: dict[str, LossAggregator] = {
    "token_mean": LossAggregator(token_sum, per_sequence=False),  # DAPO: token-level mean
    "seq_mean_token_mean": LossAggregator(seq_token_mean_sum, per_sequence=True),  # original GRPO
    "seq_mean_token_sum_norm": LossAggregator(seq_token_sum_norm_sum, per_sequence=True),  # Dr. GRPO
}

LOSS_AGG_MODES: tuple[str, ...] = tuple(LOSS_AGGREGATORS)


def get_aggregator(mode: str) -> LossAggregator:
    """The aggregator registered under ``mode``; ``ValueError`` listing the valid modes otherwise."""
    try:
        return LOSS_AGGREGATORS[mode]
    except KeyError:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {', '.join(LOSS_AGGREGATORS)}") from None


def local_denominator(mask: Tensor, mode: str) -> Tensor:
    """The denominator of ``mode`` over this ``mask`` [B, T] alone: B sequences, or the masked tokens (>= 1)."""
    if get_aggregator(mode).per_sequence:
        return torch.tensor(float(mask.shape[0]), dtype=mask.dtype, device=mask.device)
    return mask.sum().clamp(min=1)


def aggregate(
    loss_mat: Tensor, mask: Tensor, mode: str, norm_length: int | None = None, denominator: Tensor | None = None
) -> Tensor:
    """Reduce ``loss_mat`` [B, T] over ``mask`` [B, T] to a scalar with the named mode.

    ``denominator``: the global count this part is normalised by (see above); None uses the local count.

    >>> loss = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    >>> mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> aggregate(loss, mask, "token_mean"), aggregate(loss, mask, "seq_mean_token_mean")
    (tensor(2.), tensor(2.))
    >>> aggregate(loss, mask, "seq_mean_token_sum_norm")  # ((1 + 3) / 3 + 2 / 3) / 2
    tensor(1.)
    >>> aggregate(loss, mask, "token_mean", denominator=torch.tensor(6.0))  # 6 / 6: this part of a larger batch
    tensor(1.)
    """
    if denominator is None:
        denominator = local_denominator(mask, mode)
    return get_aggregator(mode).numerator(loss_mat, mask, norm_length) / denominator


# ----------------------------------------------------------------------------------------------------------------
# Losses


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float | None,
    loss_agg_mode: str,
    norm_length: int | None = None,
    *,
    denominator: Tensor | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate: max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high)), aggregated.

    logp, old_logp, adv, mask: [B, T] -> (loss scalar, stats). r = exp(logp - old_logp). ``clip_high`` None means
    symmetric clipping (``clip_low``); a larger value is DAPO's clip-higher, which lets low-probability tokens
    with positive advantage grow further. Where the clipped branch is active the gradient w.r.t. ``logp`` is 0.

    Decoupled PPO (off-policy correction): ``old_logp`` is the *proximal* policy (the learner before the update)
    and ``is_weight`` [B, T] (detached; None = all 1) multiplies each token's clipped loss by the truncated
    importance ratio proximal / behaviour. ``denominator``: see :func:`aggregate`.

    Stats: ``clipfrac`` (fraction of masked tokens where the clipped branch is active), ``approx_kl`` (the k3
    estimate of KL(old || new), non-negative, used for early stopping), ``ratio_mean``; all local token means.
    """
    upper = clip_low if clip_high is None else clip_high
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + upper)
    loss_mat = torch.maximum(unclipped, clipped)
    if is_weight is not None:
        loss_mat = loss_mat * is_weight.detach()
    loss = aggregate(loss_mat, mask, loss_agg_mode, norm_length, denominator)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(mask.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def truncated_is_weight(prox_logp: Tensor, behaviour_logp: Tensor, stale: Tensor, cap: float) -> Tensor:
    """Decoupled-PPO token weights min(exp(prox - behaviour), cap), detached; exactly 1 where ``stale`` is False.

    prox_logp, behaviour_logp: [B, T]; stale: [B] bool (the sample came from an older policy version) -> [B, T].
    On-policy the two logprobs agree only to ~1e-7 in fp32, so the weight is set to 1, not computed.

    >>> truncated_is_weight(torch.tensor([[0.0, 0.0]]), torch.tensor([[-0.5, -2.0]]), torch.tensor([True]), 2.0)
    tensor([[1.6487, 2.0000]])
    """
    with torch.no_grad():
        log_ratio = (prox_logp - behaviour_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        weight = torch.exp(log_ratio).clamp(max=cap)
        return torch.where(stale[:, None], weight, torch.ones_like(weight))


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float,
    loss_agg_mode: str,
    norm_length: int | None = None,
    denominator: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped PPO value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2), aggregated.

    values (new predictions), old_values (rollout-time predictions), returns, mask: [B, T] -> (loss, stats).
    Stats: ``vf_clipfrac`` (fraction of masked tokens where the clipped error is the larger), ``vpred_mean``.
    """
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    errors = torch.maximum(unclipped_error, clipped_error)
    loss = 0.5 * aggregate(errors, mask, loss_agg_mode, norm_length, denominator)
    with torch.no_grad():
        stats = {
            "vf_clipfrac": masked_mean((clipped_error > unclipped_error).to(mask.dtype), mask).item(),
            "vpred_mean": masked_mean(values, mask).item(),
        }
    return loss, stats


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per position: logits [B, T, V] -> [B, T].

    H = logsumexp(z) - sum softmax(z) * z (= -sum p log p, as verl computes it). Differentiable, so it can carry
    an entropy bonus.
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
