"""Per-token estimators of KL(policy || reference) from sampled tokens (Schulman's k1/k2/k3).

``logp`` and ``ref_logp`` are [B, T] log-probabilities of the sampled tokens under the policy and the frozen
reference; every estimator returns [B, T] (not masked: multiply by the completion mask, or aggregate with it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MAX_LOG_RATIO = 20.0
"""k3 exponentiates ref - logp; clamping it to +-20 keeps a single far-off token from producing inf."""


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp: unbiased, high variance, can be negative per token. [B, T] -> [B, T]."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2: biased, low variance, non-negative. [B, T] -> [B, T]."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1: unbiased and non-negative (GRPO's choice). [B, T] -> [B, T]."""
    log_ratio = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def get_kl_estimator(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The estimator registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown kl estimator {name!r}; valid: {', '.join(KL_ESTIMATORS)}") from None


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token KL estimate [B, T] with the named estimator.

    >>> kl_penalty(torch.tensor([[0.0]]), torch.tensor([[-1.0]]), "k2")
    tensor([[0.5000]])
    """
    return get_kl_estimator(estimator)(logp, ref_logp)
