"""Loss aggregation, PPO clip loss, value loss and entropy against hand-computed numbers and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr_ray.algo.losses import (
    LOSS_AGG_MODES,
    aggregate,
    entropy_from_logits,
    get_aggregator,
    ppo_clip_loss,
    value_loss,
)

torch.set_num_threads(1)


def scalar(x: torch.Tensor) -> float:
    return float(x.item())


# ----------------------------------------------------------------------------------------------------------------
# Aggregation

# Row 0: 3 tokens with losses 1 3 5 (sum 9); row 1: 1 token with loss 2 and junk 9 on padding; row 2: empty.
LOSS = torch.tensor([[1.0, 3.0, 5.0], [2.0, 9.0, 9.0], [4.0, 4.0, 4.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_token_mean_hand_computed() -> None:
    # (1 + 3 + 5 + 2) / 4 tokens
    assert scalar(aggregate(LOSS, MASK, "token_mean")) == pytest.approx(11 / 4)


def test_seq_mean_token_mean_hand_computed() -> None:
    # per-sequence means 3, 2, (empty) 0, averaged over the 3 sequences
    assert scalar(aggregate(LOSS, MASK, "seq_mean_token_mean")) == pytest.approx(5 / 3)
    assert scalar(aggregate(LOSS[:2], MASK[:2], "seq_mean_token_mean")) == pytest.approx(2.5)


def test_seq_mean_token_sum_norm_hand_computed() -> None:
    # per-sequence sums 9, 2, 0 divided by T = 3, averaged over 3 sequences: (3 + 2/3 + 0) / 3 = 11/9
    assert scalar(aggregate(LOSS, MASK, "seq_mean_token_sum_norm")) == pytest.approx(11 / 9)
    # with a fixed normaliser 10 instead of the padded length: (0.9 + 0.2 + 0) / 3
    assert scalar(aggregate(LOSS, MASK, "seq_mean_token_sum_norm", norm_length=10)) == pytest.approx(1.1 / 3)


def test_modes_registry_and_unknown_mode() -> None:
    assert LOSS_AGG_MODES == ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match=r"'token-mean'.*token_mean, seq_mean_token_mean, seq_mean_token_sum_norm"):
        get_aggregator("token-mean")
    with pytest.raises(ValueError, match="unknown loss_agg_mode"):
        aggregate(LOSS, MASK, "mean")


def test_empty_mask_gives_zero_not_nan() -> None:
    for mode in LOSS_AGG_MODES:
        assert scalar(aggregate(LOSS, torch.zeros_like(MASK), mode)) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# PPO clip loss

# 2 x 2 tokens. ratios r = 1.5, 0.5, 1.1, 1.0; advantages 1, -1, -2, 1; clip 0.2 -> [0.8, 1.2]
#   (0,0) r 1.5 A  1: unclipped -1.5, clipped -1.2 -> max -1.2 (clipped branch active)
#   (0,1) r 0.5 A -1: unclipped  0.5, clipped  0.8 -> max  0.8 (clipped branch active)
#   (1,0) r 1.1 A -2: unclipped  2.2, clipped  2.2 -> 2.2
#   (1,1) r 1.0 A  1: -1
# token_mean: (-1.2 + 0.8 + 2.2 - 1) / 4 = 0.2; clipfrac 2/4; ratio_mean 4.1 / 4 = 1.025
# approx_kl (k3 = r - 1 - ln r): 0.0945349 + 0.1931472 + 0.0046898 + 0 = 0.2923719, / 4 = 0.0730930
RATIOS = torch.tensor([[1.5, 0.5], [1.1, 1.0]])
ADV = torch.tensor([[1.0, -1.0], [-2.0, 1.0]])
OLD = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])


def test_ppo_clip_loss_hand_computed() -> None:
    loss, stats = ppo_clip_loss(OLD + RATIOS.log(), OLD, ADV, torch.ones(2, 2), 0.2, None, "token_mean")
    assert scalar(loss) == pytest.approx(0.2, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.025, abs=1e-6)
    assert stats["approx_kl"] == pytest.approx(0.0730930, abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())


def test_clip_higher_widens_only_the_upper_side() -> None:
    # clip_high 0.6 -> [0.8, 1.6]: (0,0) r 1.5 is now inside: -1.5; (0,1) stays clipped at 0.8.
    # (-1.5 + 0.8 + 2.2 - 1) / 4 = 0.125, clipfrac 1/4
    loss, stats = ppo_clip_loss(OLD + RATIOS.log(), OLD, ADV, torch.ones(2, 2), 0.2, 0.6, "token_mean")
    assert scalar(loss) == pytest.approx(0.125, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(0.25)


def test_ppo_loss_uses_the_aggregation_mode() -> None:
    # seq_mean_token_mean: rows (-1.2 + 0.8) / 2 = -0.2 and (2.2 - 1) / 2 = 0.6 -> 0.2 (same as token_mean here),
    # so drop token (1,1) from the mask: rows -0.2 and 2.2 -> 1.0 ; token_mean would be (-1.2 + 0.8 + 2.2) / 3 = 0.6
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = ppo_clip_loss(OLD + RATIOS.log(), OLD, ADV, mask, 0.2, None, "seq_mean_token_mean")
    assert scalar(loss) == pytest.approx(1.0, abs=1e-6)
    loss, _ = ppo_clip_loss(OLD + RATIOS.log(), OLD, ADV, mask, 0.2, None, "token_mean")
    assert scalar(loss) == pytest.approx(0.6, abs=1e-6)


def one_token_grad(ratio: float, adv: float, clip_low: float = 0.2, clip_high: float | None = None) -> float:
    old = torch.tensor([[-1.0]])
    logp = (old + math.log(ratio)).requires_grad_(True)
    loss, _ = ppo_clip_loss(logp, old, torch.tensor([[adv]]), torch.ones(1, 1), clip_low, clip_high, "token_mean")
    loss.backward()
    assert logp.grad is not None
    return float(logp.grad.item())


@pytest.mark.parametrize(("ratio", "adv"), [(1.5, 1.0), (0.5, -1.0)])
def test_ratio_outside_the_clip_in_the_advantage_direction_has_zero_grad(ratio: float, adv: float) -> None:
    assert one_token_grad(ratio, adv) == 0.0


@pytest.mark.parametrize(("ratio", "adv"), [(1.5, -1.0), (0.5, 1.0), (1.1, 1.0), (0.9, -1.0)])
def test_unclipped_branch_has_the_policy_gradient(ratio: float, adv: float) -> None:
    # d/dlogp of -A * exp(logp - old) is -A * r (the pessimistic max keeps these tokens unclipped)
    assert one_token_grad(ratio, adv) == pytest.approx(-adv * ratio, rel=1e-5)


def test_clip_higher_restores_the_gradient_above_the_old_upper_bound() -> None:
    assert one_token_grad(1.25, 1.0) == 0.0
    assert one_token_grad(1.25, 1.0, clip_high=0.28) == pytest.approx(-1.25, rel=1e-5)


def test_masked_tokens_get_no_gradient_and_do_not_change_the_loss() -> None:
    old = torch.zeros(1, 3)
    logp = torch.tensor([[0.1, 50.0, -50.0]], requires_grad=True)  # extreme junk on the padding
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    loss, stats = ppo_clip_loss(logp, old, torch.ones(1, 3), mask, 0.2, None, "token_mean")
    loss.backward()
    assert logp.grad is not None
    assert logp.grad[0, 1:].tolist() == [0.0, 0.0]
    assert scalar(loss) == pytest.approx(-math.exp(0.1), rel=1e-5)
    assert math.isfinite(stats["approx_kl"]) and math.isfinite(stats["ratio_mean"])


# ----------------------------------------------------------------------------------------------------------------
# Value loss


def test_value_loss_hand_computed_and_clipped_gradient() -> None:
    # token 0: V 1.0, old 0.5, R 0 -> clipped V = 0.7; errors 1.0 vs 0.49 -> 1.0 (unclipped)
    # token 1: V 2.5, old 2.0, R 3 -> clipped V = 2.2; errors 0.25 vs 0.64 -> 0.64 (clipped)
    # loss = 0.5 * (1.0 + 0.64) / 2 = 0.41; clipfrac 1/2; vpred_mean 1.75
    # grad: token 0 = 0.5 * 2 * (1 - 0) / 2 = 0.5; token 1 through the clipped (constant) branch = 0
    values = torch.tensor([[1.0, 2.5]], requires_grad=True)
    old_values, returns = torch.tensor([[0.5, 2.0]]), torch.tensor([[0.0, 3.0]])
    loss, stats = value_loss(values, old_values, returns, torch.ones(1, 2), 0.2, "token_mean")
    assert scalar(loss) == pytest.approx(0.41, abs=1e-6)
    assert stats == pytest.approx({"vf_clipfrac": 0.5, "vpred_mean": 1.75})
    loss.backward()
    assert values.grad is not None
    torch.testing.assert_close(values.grad, torch.tensor([[0.5, 0.0]]))


# ----------------------------------------------------------------------------------------------------------------
# Entropy


def test_entropy_hand_computed() -> None:
    # p = (1/4, 3/4): H = 0.25 ln 4 + 0.75 ln(4/3) = 0.3465736 + 0.2157616 = 0.5623351 ; uniform over 4: ln 4
    two_way = [0.0, math.log(3.0), -1e4, -1e4]  # the -1e4 entries have probability 0 and add nothing
    shifted = [x + 2.0 for x in two_way]  # softmax is shift invariant
    logits = torch.tensor([[two_way, shifted], [[1.0] * 4, [-3.0] * 4]])
    entropy = entropy_from_logits(logits)
    assert entropy.shape == (2, 2)
    torch.testing.assert_close(entropy, torch.tensor([[0.5623351] * 2, [math.log(4.0)] * 2]))


def test_entropy_matches_categorical_on_random_logits() -> None:
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)


def test_truncated_is_weight_by_hand() -> None:
    from rlvr_ray.algo.losses import truncated_is_weight

    prox = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    behaviour = torch.tensor([[-1.5, -0.5], [-0.5 + 1e-7, -3.0]])
    w = truncated_is_weight(prox, behaviour, torch.tensor([True, False]), cap=2.0)
    torch.testing.assert_close(w[0], torch.tensor([math.exp(0.5), math.exp(-1.5)]))
    assert w[1].tolist() == [1.0, 1.0]  # on-policy: exactly 1, whatever the logprobs say
    capped = truncated_is_weight(torch.tensor([[0.0]]), torch.tensor([[-3.0]]), torch.tensor([True]), cap=2.0)
    assert capped.item() == 2.0


def test_is_weight_of_ones_leaves_the_loss_bit_identical_and_weights_scale_tokens() -> None:
    gen = torch.Generator().manual_seed(3)
    old = torch.randn(3, 5, generator=gen)
    logp = old + 0.3 * torch.randn(3, 5, generator=gen)
    adv = torch.randn(3, 5, generator=gen)
    mask = (torch.rand(3, 5, generator=gen) > 0.3).float()
    for mode in LOSS_AGG_MODES:
        plain, _ = ppo_clip_loss(logp, old, adv, mask, 0.2, 0.28, mode)
        ones, _ = ppo_clip_loss(logp, old, adv, mask, 0.2, 0.28, mode, is_weight=torch.ones(3, 5))
        assert torch.equal(plain, ones), mode
    # token_mean with weights w: sum(w * l) / count.
    w = torch.rand(3, 5, generator=gen) * 2
    ratio = torch.exp(logp - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28))
    weighted, _ = ppo_clip_loss(logp, old, adv, mask, 0.2, 0.28, "token_mean", is_weight=w)
    torch.testing.assert_close(weighted, (w * per_token * mask).sum() / mask.sum())


def test_aggregate_with_a_global_denominator_adds_up_over_parts() -> None:
    # Two parts of one batch, each divided by the whole batch's count, sum to the whole batch's aggregate.
    for mode in LOSS_AGG_MODES:
        whole = aggregate(LOSS, MASK, mode, norm_length=10)
        denominator = MASK.sum() if mode == "token_mean" else torch.tensor(float(len(MASK)))
        parts = [aggregate(LOSS[s], MASK[s], mode, 10, denominator) for s in (slice(0, 1), slice(1, None))]
        torch.testing.assert_close(parts[0] + parts[1], whole)
