"""KL estimators: hand-computed values, Monte Carlo agreement with the exact KL, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr_ray.algo.kl import KL_ESTIMATORS, get_kl_estimator, kl_penalty

torch.set_num_threads(1)

LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-2.0, -1.0, -0.5]])


def test_k1_hand_computed() -> None:
    # logp - ref: 1, -1, 0
    torch.testing.assert_close(kl_penalty(LOGP, REF, "k1"), torch.tensor([[1.0, -1.0, 0.0]]))


def test_k2_hand_computed() -> None:
    # 0.5 * (logp - ref)^2: 0.5, 0.5, 0
    torch.testing.assert_close(kl_penalty(LOGP, REF, "k2"), torch.tensor([[0.5, 0.5, 0.0]]))


def test_k3_hand_computed() -> None:
    # d = ref - logp: -1, 1, 0 -> exp(d) - d - 1: e^-1 = 0.3678794, e - 2 = 0.7182818, 0
    torch.testing.assert_close(kl_penalty(LOGP, REF, "k3"), torch.tensor([[0.3678794, 0.7182818, 0.0]]))


def test_k3_is_non_negative_and_finite_for_extreme_log_ratios() -> None:
    logp = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 5
    logp[0, 0] = -1000.0  # exp(ref - logp) would overflow without the clamp
    kl = kl_penalty(logp, torch.zeros_like(logp), "k3")
    assert torch.isfinite(kl).all() and (kl >= 0).all()


def test_k3_gradient_vanishes_at_the_reference() -> None:
    logp = torch.tensor([[-0.7, -1.3]], requires_grad=True)
    kl_penalty(logp, logp.detach().clone(), "k3").sum().backward()
    assert logp.grad is not None
    assert logp.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("name", ["k1", "k3"])
def test_unbiased_estimators_average_to_the_exact_kl(name: str) -> None:
    # Sample tokens from p; the mean of k1 and k3 must approach KL(p || q) = sum p log(p / q).
    gen = torch.Generator().manual_seed(1)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())  # 0.5 ln 2.5 + 0.2 ln 0.4 = 0.2749
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    estimate = kl_penalty(p.log()[tokens], q.log()[tokens], name).mean().item()
    assert estimate == pytest.approx(exact, abs=0.01)
    assert exact == pytest.approx(0.5 * math.log(2.5) + 0.2 * math.log(0.4))


def test_unknown_estimator_raises_with_valid_names() -> None:
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}
    with pytest.raises(ValueError, match=r"'low_var_kl'.*k1, k2, k3"):
        get_kl_estimator("low_var_kl")
    with pytest.raises(ValueError, match="unknown kl estimator"):
        kl_penalty(LOGP, REF, "k4")


def test_k3_value_is_clamped_to_ten_by_hand() -> None:
    # ref - logp = 30 -> log-ratio clamp 20 -> e^20 - 21 ~ 4.85e8 -> value clamp 10; = -30 -> e^-20 + 19 -> 10;
    # ref - logp = 2 -> e^2 - 3 = 4.389056 stays as it is.
    logp = torch.tensor([[-30.0, 30.0, -2.0]])
    torch.testing.assert_close(kl_penalty(logp, torch.zeros_like(logp), "k3"), torch.tensor([[10.0, 10.0, 4.389056]]))


def expected_gradient(estimator: str, logits: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """E_{x ~ pi}[grad of k(x)] over all tokens exactly (sampling distribution held fixed, as in a loss)."""
    theta = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, dim=-1)
    weights = logp.exp().detach()
    (weights * kl_penalty(logp, ref.log_softmax(-1), estimator)).sum().backward()
    assert theta.grad is not None
    return theta.grad


def kl_gradient(logits: torch.Tensor, ref: torch.Tensor, forward: bool) -> torch.Tensor:
    """grad of KL(ref || pi) (forward=True) or KL(pi || ref) w.r.t. the policy logits."""
    theta = logits.clone().requires_grad_(True)
    logp, ref_logp = torch.log_softmax(theta, dim=-1), ref.log_softmax(-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum() if forward else (logp.exp() * (logp - ref_logp)).sum()
    kl.backward()
    assert theta.grad is not None
    return theta.grad


def test_in_the_loss_k1_optimises_nothing_k2_reverse_kl_k3_forward_kl() -> None:
    logits = torch.tensor([[1.0, -0.5, 0.3, 2.0]], dtype=torch.float64)
    ref = torch.tensor([[0.2, 0.1, -1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(expected_gradient("k1", logits, ref), torch.zeros_like(logits))
    torch.testing.assert_close(expected_gradient("k2", logits, ref), kl_gradient(logits, ref, forward=False))
    torch.testing.assert_close(expected_gradient("k3", logits, ref), kl_gradient(logits, ref, forward=True))
    # ... and the two directions really differ here, so the assertions above tell them apart.
    assert (kl_gradient(logits, ref, True) - kl_gradient(logits, ref, False)).abs().max() > 1e-2
