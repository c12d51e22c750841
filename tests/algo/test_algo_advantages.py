"""Advantage estimators: hand-computed cases, vectorised code against plain Python loops, registry errors."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import pytest
import torch

from rlvr_ray.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    dr_grpo_advantages,
    gae_advantages,
    get_advantage_estimator,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    token_level_rewards,
)

torch.set_num_threads(1)


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# Groups interleaved and with non-contiguous ids: group 5 = samples 0, 2; group 2 = samples 1, 3, 5; group 9 = 4.
GROUP_IDS = torch.tensor([5, 2, 5, 2, 9, 2])
SCORES = torch.tensor([1.0, 2.0, 0.0, 2.0, 7.0, 5.0])
# Variable lengths (right-padded, T = 3) so the broadcast must respect the mask.
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_grpo_hand_computed() -> None:
    # group 5: scores 1, 0 -> mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 0.70711 -> +-0.5 / 0.70711 = +-0.70711
    # group 2: scores 2, 2, 5 -> mean 3, deviations -1 -1 2, var (1 + 1 + 4) / 2 = 3, std 1.73205
    #          -> -0.57735, -0.57735, 1.15470
    # group 9: a lone sample -> 0
    adv, returns = grpo_advantages(SCORES, GROUP_IDS, MASK, eps=1e-6)
    per_sample = [0.70711, -0.57735, -0.70711, -0.57735, 0.0, 1.15470]
    close(adv, [[a * m for m in row] for a, row in zip(per_sample, MASK.tolist(), strict=True)])
    assert torch.equal(returns, adv)


def test_dr_grpo_hand_computed_has_no_std_division() -> None:
    # group 5: 1 - 0.5, 0 - 0.5; group 2: 2 - 3, 2 - 3, 5 - 3; group 9: 0
    adv, _ = dr_grpo_advantages(SCORES, GROUP_IDS, MASK)
    close(adv[:, 0], [0.5, -1.0, -0.5, -1.0, 0.0, 2.0])
    close(adv[1], [-1.0, -1.0, 0.0])  # padding stays 0


def test_rloo_hand_computed_uses_leave_one_out_mean() -> None:
    # group 5: 1 - 0 = 1, 0 - 1 = -1
    # group 2: 2 - (2 + 5) / 2 = -1.5 (twice), 5 - (2 + 2) / 2 = 3
    # group 9: no other sample -> 0
    adv, returns = rloo_advantages(SCORES, GROUP_IDS, MASK)
    close(adv[:, 0], [1.0, -1.5, -1.0, -1.5, 0.0, 3.0])
    close(adv[2], [-1.0, 0.0, 0.0])
    assert torch.equal(returns, adv)


def test_grpo_equal_scores_in_a_group_give_zero_advantage() -> None:
    adv, _ = grpo_advantages(torch.tensor([0.7, 0.7, 0.7, 1.0]), torch.tensor([0, 0, 0, 1]), torch.ones(4, 2))
    close(adv, [[0.0, 0.0]] * 4, atol=1e-4)


@pytest.mark.parametrize("score", [0.3, 1 / 3, 2 / 3, 0.7, 0.1])
def test_a_group_of_equal_scores_gets_exactly_zero_advantage(score: float) -> None:
    # sum / count of 8 copies of such a score misses it by an ulp; divided by (std + eps) that was ~0.03-0.06.
    scores, groups, mask = torch.full((8,), score), torch.zeros(8, dtype=torch.long), torch.ones(8, 2)
    for estimator in (grpo_advantages, dr_grpo_advantages, rloo_advantages):
        adv, _ = estimator(scores, groups, mask)
        assert torch.equal(adv, torch.zeros(8, 2)), estimator.__name__


def test_integer_scores_are_accepted() -> None:
    adv, _ = rloo_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]), torch.ones(2, 1))
    assert adv.dtype == torch.float32
    close(adv, [[1.0], [-1.0]])


def test_gae_hand_computed_with_padding() -> None:
    # gamma = 1, lam = 0.5.
    # seq 0 (3 tokens): rewards 0 0 1, values 0.5 0.25 0.5
    #   t2: delta = 1 + 0 - 0.5 = 0.5                 A2 = 0.5
    #   t1: delta = 0 + 0.5 - 0.25 = 0.25             A1 = 0.25 + 0.5 * 0.5 = 0.5
    #   t0: delta = 0 + 0.25 - 0.5 = -0.25            A0 = -0.25 + 0.5 * 0.5 = 0
    # seq 1 (2 tokens, then padding whose value 9 must not be bootstrapped): rewards 0 2, values 1 0.5
    #   t1: delta = 2 + 0 - 0.5 = 1.5                 A1 = 1.5
    #   t0: delta = 0 + 0.5 - 1 = -0.5                A0 = -0.5 + 0.5 * 1.5 = 0.25
    # returns = A + V: [0.5, 0.75, 1.0], [1.25, 2.0, (pad) 0]
    # whitening over the 5 tokens 0, 0.5, 0.5, 0.25, 1.5: mean 0.55, squared deviations
    #   0.3025 + 0.0025 + 0.0025 + 0.09 + 0.9025 = 1.3, unbiased var 1.3 / 4 = 0.325, std 0.570088
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 0.5], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    close(returns, [[0.5, 0.75, 1.0], [1.25, 2.0, 0.0]])
    std = 0.570088
    close(adv, [[-0.55 / std, -0.05 / std, -0.05 / std], [-0.3 / std, 0.95 / std, 0.0]], atol=1e-4)


def test_gae_returns_with_gamma_and_lambda_one_are_the_reward_to_go() -> None:
    # lam = gamma = 1 telescopes: A_t = sum_{k>=t} r_k - V_t, so returns = reward-to-go = [3, 3] for rewards 1, 2.
    rewards = torch.tensor([[1.0, 2.0]])
    values = torch.tensor([[0.4, -7.0]])
    _, returns = gae_advantages(rewards, values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    close(returns, [[3.0, 2.0]])


def test_gae_does_not_track_gradients_of_the_values() -> None:
    values = torch.tensor([[0.5, 0.1]], requires_grad=True)
    adv, returns = gae_advantages(torch.tensor([[0.0, 1.0]]), values, torch.ones(1, 2), gamma=1.0, lam=0.9)
    assert not adv.requires_grad and not returns.requires_grad


def test_reinforce_pp_hand_computed() -> None:
    # gamma = 0.5. token rewards include a -0.1 KL cost on seq 1's first token and junk (5) on its padding.
    # seq 0: G2 = 1, G1 = 0 + 0.5 * 1 = 0.5, G0 = 0 + 0.5 * 0.5 = 0.25
    # seq 1: padding -> 0 and restarts; G1 = 2, G0 = -0.1 + 0.5 * 2 = 0.9
    # whitening over 0.25 0.5 1 0.9 2: mean 4.65 / 5 = 0.93, deviations -0.68 -0.43 0.07 -0.03 1.07,
    #   squares 0.4624 + 0.1849 + 0.0049 + 0.0009 + 1.1449 = 1.798, unbiased var 0.4495, std 0.670447
    rewards = torch.tensor([[0.0, 0.0, 1.0], [-0.1, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, returns = reinforce_pp_advantages(rewards, mask, gamma=0.5)
    close(returns, [[0.25, 0.5, 1.0], [0.9, 2.0, 0.0]])
    std = 0.670447
    close(adv, [[-0.68 / std, -0.43 / std, 0.07 / std], [-0.03 / std, 1.07 / std, 0.0]], atol=1e-4)


def test_token_level_rewards_hand_computed() -> None:
    # score on the last completion token, minus kl_coef * kl everywhere on the mask:
    # row 0 (2 tokens): -0.5 * 0.1 = -0.05, 1 - 0.5 * 0.2 = 0.9, pad 0
    # row 1 (3 tokens): -0.2, -0.25, 2 - 0.3 = 1.7 ; row 2 (no tokens): nothing
    scores = torch.tensor([1.0, 2.0, 3.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [1.0, 1.0, 1.0]])
    close(token_level_rewards(scores, mask, kl, kl_coef=0.5), [[-0.05, 0.9, 0.0], [-0.2, -0.25, 1.7], [0.0] * 3])
    close(token_level_rewards(scores, mask), [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0] * 3])


# ----------------------------------------------------------------------------------------------------------------
# Vectorised code against plain Python loops on random inputs


def random_batch(seed: int, batch: int = 24, length: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores [B] with ties, group ids [B] shuffled with a few singletons, right-padded mask [B, T]."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (batch,), generator=gen).float() / 3
    group_ids = torch.randint(0, batch // 3, (batch,), generator=gen) * 7 + 3
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    return scores, group_ids, mask


def group_members(group_ids: torch.Tensor) -> dict[int, list[int]]:
    members: dict[int, list[int]] = defaultdict(list)
    for i, gid in enumerate(group_ids.tolist()):
        members[gid].append(i)
    return members


def loop_grpo(scores: list[float], group_ids: torch.Tensor, eps: float, norm_by_std: bool) -> list[float]:
    out = [0.0] * len(scores)
    for members in group_members(group_ids).values():
        values = [scores[i] for i in members]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        for i in members:
            out[i] = (scores[i] - mean) / (std + eps) if norm_by_std else scores[i] - mean
    return out


def loop_rloo(scores: list[float], group_ids: torch.Tensor) -> list[float]:
    out = [0.0] * len(scores)
    for members in group_members(group_ids).values():
        for i in members:
            others = [scores[j] for j in members if j != i]
            out[i] = scores[i] - statistics.fmean(others) if others else 0.0
    return out


def loop_whiten(rows: list[list[float]]) -> list[list[float]]:
    flat = [x for row in rows for x in row]
    mean, var = statistics.fmean(flat), statistics.variance(flat)
    return [[(x - mean) / math.sqrt(var + 1e-8) for x in row] for row in rows]


def loop_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """One unpadded sequence, the textbook recursion."""
    advantages = [0.0] * len(rewards)
    next_adv = next_value = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_value - values[t]
        next_adv = advantages[t] = delta + gamma * lam * next_adv
        next_value = values[t]
    return advantages, [a + v for a, v in zip(advantages, values, strict=True)]


def padded(rows: list[list[float]], length: int) -> list[list[float]]:
    return [row + [0.0] * (length - len(row)) for row in rows]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_matches_python_loop(seed: int, norm_by_std: bool) -> None:
    scores, group_ids, mask = random_batch(seed)
    adv, _ = grpo_advantages(scores, group_ids, mask, eps=1e-6, norm_by_std=norm_by_std)
    expected = loop_grpo(scores.tolist(), group_ids, 1e-6, norm_by_std)
    close(adv, [[a * m for m in row] for a, row in zip(expected, mask.tolist(), strict=True)], atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_rloo_matches_python_loop(seed: int) -> None:
    scores, group_ids, mask = random_batch(seed)
    adv, _ = rloo_advantages(scores, group_ids, mask)
    expected = loop_rloo(scores.tolist(), group_ids)
    close(adv, [[a * m for m in row] for a, row in zip(expected, mask.tolist(), strict=True)])


@pytest.mark.parametrize("seed", range(4))
def test_gae_matches_python_loop_on_variable_lengths(seed: int) -> None:
    _, _, mask = random_batch(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    # Junk on the padding must not change anything.
    rewards, values = torch.randn(mask.shape, generator=gen), torch.randn(mask.shape, generator=gen)
    gamma, lam = 0.9, 0.8
    adv, returns = gae_advantages(rewards, values, mask, gamma, lam)
    lengths = mask.sum(-1).long().tolist()
    rows = zip(rewards.tolist(), values.tolist(), lengths, strict=True)
    per_seq = [loop_gae(r[:n], v[:n], gamma, lam) for r, v, n in rows]
    close(returns, padded([ret for _, ret in per_seq], mask.shape[1]), atol=1e-4)
    whitened = loop_whiten([a for a, _ in per_seq])
    close(adv, padded(whitened, mask.shape[1]), atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_reinforce_pp_matches_python_loop(seed: int) -> None:
    _, _, mask = random_batch(seed)
    rewards = torch.randn(mask.shape, generator=torch.Generator().manual_seed(seed))
    gamma = 0.7
    adv, returns = reinforce_pp_advantages(rewards, mask, gamma)
    expected_returns = []
    for row, n in zip(rewards.tolist(), mask.sum(-1).long().tolist(), strict=True):
        running, out = 0.0, [0.0] * n
        for t in reversed(range(n)):
            running = out[t] = row[t] + gamma * running
        expected_returns.append(out)
    close(returns, padded(expected_returns, mask.shape[1]), atol=1e-4)
    close(adv, padded(loop_whiten(expected_returns), mask.shape[1]), atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_names() -> None:
    assert set(ADVANTAGE_ESTIMATORS) == {"gae", "grpo", "dr_grpo", "rloo", "reinforce_pp"}


def test_unknown_estimator_raises_with_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'gpro'.*gae, grpo, dr_grpo, rloo, reinforce_pp"):
        get_advantage_estimator("gpro")


def test_registry_dispatches_to_the_named_estimator() -> None:
    inputs = AdvantageInputs(MASK, scores=SCORES, group_ids=GROUP_IDS)
    for name, direct in [("grpo", grpo_advantages), ("dr_grpo", dr_grpo_advantages), ("rloo", rloo_advantages)]:
        torch.testing.assert_close(compute_advantages(name, inputs)[0], direct(SCORES, GROUP_IDS, MASK)[0])
    rewards = token_level_rewards(SCORES, MASK)
    values = torch.full(MASK.shape, 0.3)
    gae = compute_advantages("gae", AdvantageInputs(MASK, token_rewards=rewards, values=values), gamma=0.9, lam=0.8)
    torch.testing.assert_close(gae[1], gae_advantages(rewards, values, MASK, 0.9, 0.8)[1])
    rpp = compute_advantages("reinforce_pp", AdvantageInputs(MASK, token_rewards=rewards), gamma=0.9)
    torch.testing.assert_close(rpp[1], reinforce_pp_advantages(rewards, MASK, 0.9)[1])


@pytest.mark.parametrize(
    ("name", "missing"), [("gae", "values"), ("grpo", "group_ids"), ("reinforce_pp", "token_rewards")]
)
def test_missing_inputs_are_named(name: str, missing: str) -> None:
    inputs = AdvantageInputs(MASK, scores=SCORES, token_rewards=torch.zeros(MASK.shape) if name == "gae" else None)
    with pytest.raises(ValueError, match=f"{name}.*{missing}"):
        compute_advantages(name, inputs)
