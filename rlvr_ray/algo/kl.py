"""Per-token estimators of KL(policy || reference) from sampled tokens (Schulman's k1/k2/k3).

``logp`` and ``ref_logp`` are [B, T] log-probabilities of the sampled tokens under the policy and the frozen
reference; every estimator returns [B, T] (not masked: multiply by the completion mask, or aggregate with it).

Value versus gradient. With tokens sampled from the policy pi, each estimator's *value* estimates KL(pi || ref)
(k1, k3 unbiased; k2 biased). Used as a reward penalty (``kl_in_reward``, a detached number) only the value
matters. Used as a *loss* term, differentiated through ``logp`` while the sampling distribution is held fixed,
what matters is the expected gradient, and the three differ (r = ref / pi, d = log r = ref_logp - logp):

- k1 = -d: grad = grad logp, whose expectation under pi is sum_x grad pi(x) = 0. In the loss it optimises
  nothing; it only adds noise. The config rejects k1 in the loss (use it in the reward instead).
- k2 = d^2 / 2: grad = -d grad logp, expectation E_pi[log(pi/ref) grad log pi] = grad KL(pi || ref). Pulls
  towards the reference along the reverse KL, exactly, on-policy.
- k3 = r - 1 - d: grad = (1 - r) grad logp, expectation -sum_x ref(x) grad log pi(x) = grad KL(ref || pi).
  It optimises the *forward* KL(ref || pi) (mass-covering), not KL(pi || ref), although its value estimates
  the latter. GRPO's and verl's ``low_var_kl`` are this estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MAX_LOG_RATIO = 20.0
"""k3 exponentiates ref - logp; clamping it to +-20 keeps a single far-off token from producing inf."""

MAX_K3 = 10.0
"""k3's value is clamped to [-10, 10] (as verl's ``low_var_kl``), so one token cannot contribute e^20."""


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp: unbiased value, can be negative per token; zero-mean gradient. [B, T] -> [B, T]."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2: biased, non-negative; gradient of KL(pi || ref). [B, T] -> [B, T]."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]: unbiased value of KL(pi || ref),
    gradient of KL(ref || pi) (see the module docstring). [B, T] -> [B, T].

    >>> kl_k3(torch.tensor([[-30.0]]), torch.tensor([[0.0]]))  # e^20 - 21 without the clamp
    tensor([[10.]])
    """
    log_ratio = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-MAX_K3, MAX_K3)


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
