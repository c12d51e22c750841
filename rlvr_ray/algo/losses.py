"""Policy and value losses and the aggregation of a per-token loss matrix into a scalar.

Shapes: ``logp``, ``old_logp``, ``adv``, ``values``, ``returns``, ``mask`` are [B, T] (``mask`` float, 1 on
completion tokens); ``logits`` are [B, T, V]. Losses are to be *minimised*. Stats are plain floats for logging.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlvr_ray.algo.masked import masked_mean

MAX_LOG_RATIO = 20.0
"""The log importance ratio is clamped to +-20 before exp so one stale token cannot produce inf (as in verl)."""


# ----------------------------------------------------------------------------------------------------------------
# Aggregation


def token_mean(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """DAPO token-level mean: sum over all masked tokens / number of masked tokens. [B, T] -> scalar."""
    return masked_mean(loss_mat, mask)


def seq_mean_token_mean(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """Original GRPO: mean over tokens within each sequence, then mean over the B sequences. [B, T] -> scalar.

    A sequence with no completion token contributes 0 and still counts in the B (a fixed denominator, as in
    recent verl, so that micro-batches of equal size are weighted equally).
    """
    return masked_mean(loss_mat, mask, dim=-1).mean()


def seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, norm_length: int | None = None) -> Tensor:
    """Dr. GRPO: per-sequence token *sum* divided by a constant, then mean over the B sequences. [B, T] -> scalar.

    The constant is ``norm_length`` when given, else the padded length T. Pass the configured maximum generation
    length so the normaliser does not change with how a micro-batch happens to be padded.
    """
    constant = norm_length if norm_length is not None else loss_mat.shape[-1]
    return ((loss_mat * mask).sum(dim=-1) / constant).mean()


LossAggregator = Callable[[Tensor, Tensor, "int | None"], Tensor]

LOSS_AGGREGATORS: dict[str, LossAggregator] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}

LOSS_AGG_MODES: tuple[str, ...] = tuple(LOSS_AGGREGATORS)


def get_aggregator(mode: str) -> LossAggregator:
    """The aggregator registered under ``mode``; ``ValueError`` listing the valid modes otherwise."""
    try:
        return LOSS_AGGREGATORS[mode]
    except KeyError:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {', '.join(LOSS_AGGREGATORS)}") from None


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Reduce ``loss_mat`` [B, T] over ``mask`` [B, T] to a scalar with the named mode.

    >>> loss = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    >>> mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> aggregate(loss, mask, "token_mean"), aggregate(loss, mask, "seq_mean_token_mean")
    (tensor(2.), tensor(2.))
    >>> aggregate(loss, mask, "seq_mean_token_sum_norm")  # ((1 + 3) / 3 + 2 / 3) / 2
    tensor(1.)
    """
    return get_aggregator(mode)(loss_mat, mask, norm_length)


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
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate: max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high)), aggregated.

    logp, old_logp, adv, mask: [B, T] -> (loss scalar, stats). r = exp(logp - old_logp). ``clip_high`` None means
    symmetric clipping (``clip_low``); a larger value is DAPO's clip-higher, which lets low-probability tokens
    with positive advantage grow further. Where the clipped branch is active the gradient w.r.t. ``logp`` is 0.

    Stats: ``clipfrac`` (fraction of masked tokens where the clipped branch is active), ``approx_kl`` (the k3
    estimate of KL(old || new), non-negative, used for early stopping), ``ratio_mean``.
    """
    upper = clip_low if clip_high is None else clip_high
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + upper)
    loss = aggregate(torch.maximum(unclipped, clipped), mask, loss_agg_mode, norm_length)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(mask.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float,
    loss_agg_mode: str,
    norm_length: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped PPO value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2), aggregated.

    values (new predictions), old_values (rollout-time predictions), returns, mask: [B, T] -> (loss, stats).
    Stats: ``vf_clipfrac`` (fraction of masked tokens where the clipped error is the larger), ``vpred_mean``.
    """
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * aggregate(torch.maximum(unclipped_error, clipped_error), mask, loss_agg_mode, norm_length)
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
