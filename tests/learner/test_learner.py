"""The learner: batch alignment, reward placement, the logprob-mismatch check and real optimizer steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rlvr_ray.algo.masked import masked_mean
from rlvr_ray.config import ModelConfig, TrainingConfig
from rlvr_ray.learner.batch import TrainBatch, build_train_batch, shard_by_groups
from rlvr_ray.learner.learner import Learner, logprob_mismatch
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.policy import build_model, load_policy, save_policy
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import RolloutBatch, SamplingSpec, ScoredBatch, Scores

VOCAB = Vocab(13, ("+", "-", "*"))
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
torch.set_num_threads(1)


def scored_batch(prompts, completions, logprobs, rewards, group_size) -> ScoredBatch:
    n = len(completions)
    r = np.asarray(rewards, dtype=np.float32)
    rollouts = RolloutBatch(
        prompt_ids=prompts,
        completion_ids=completions,
        logprobs=logprobs,
        group_ids=np.arange(n) // group_size,
        answers=np.zeros(n, np.int64),
        complexities=np.ones(n, np.int64),
        policy_version=np.zeros(n, np.int64),
    )
    return ScoredBatch(rollouts, Scores(boxed=r, correct=r, step=r, combined=r, reward=r))


def test_build_train_batch_aligns_completion_tokens_by_hand() -> None:
    prompt = VOCAB.encode("<boe> 3 4 +")
    completion = VOCAB.encode("= 7 <eoe>")
    short_prompt = VOCAB.encode("<boe> 5")
    batch = build_train_batch(
        scored_batch(
            [prompt, short_prompt], [completion, VOCAB.encode("<eoe>")], [[-0.1, -0.2, -0.3], [-0.5]], [1.0, 0.0], 2
        ),
        VOCAB.pad,
    )
    assert batch.input_ids.tolist()[0] == prompt + completion
    assert batch.input_ids.tolist()[1] == [*short_prompt, VOCAB.eoe] + [VOCAB.pad] * 4
    # sequence 0: tokens 4,5,6 are generated -> per-token indices 3,4,5
    assert batch.mask[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.engine_logp[0].tolist() == pytest.approx([0, 0, 0, -0.1, -0.2, -0.3])
    # sequence 1: token 2 is generated -> index 1
    assert batch.mask[1].tolist() == [0, 1, 0, 0, 0, 0]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0]


def test_logprob_mismatch_by_hand() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    stats = logprob_mismatch(torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[-1.5, -2.0, 0.0]]), mask)
    assert stats["mismatch/logprob_abs_diff"] == pytest.approx(0.25)
    assert stats["mismatch/logprob_max_abs_diff"] == pytest.approx(0.5)
    assert stats["mismatch/ratio_mean"] == pytest.approx((np.exp(0.5) + 1) / 2)


def test_shard_by_groups_keeps_whole_groups() -> None:
    prompts = [VOCAB.encode("<boe> 1")] * 8
    batch = build_train_batch(scored_batch(prompts, [[VOCAB.eoe]] * 8, [[0.0]] * 8, range(8), 2), VOCAB.pad)
    shards = [shard_by_groups(batch, r, 2) for r in range(2)]
    assert shards[0].group_ids.tolist() == [0, 0, 1, 1] and shards[1].group_ids.tolist() == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="cannot be split evenly over 3"):
        shard_by_groups(batch, 0, 3)


def make_learner(tmp_path: Path, algorithm: str, **overrides) -> tuple[Learner, Path]:
    model_dir = save_policy(build_model(TINY, VOCAB, seed=1), VOCAB, tmp_path / "policy")
    settings = {"batch_size": 8, "group_size": 4, "mini_batch_size": 4, "learning_rate": 1e-2, **overrides}
    cfg = TrainingConfig(algorithm=algorithm, **settings)
    module = PolicyWithValue(load_policy(model_dir), with_value_head=algorithm == "ppo")
    reference = load_policy(model_dir) if cfg.kl_coef > 0 else None
    return Learner(cfg, module, module, reference), model_dir


def engine_rollouts(model_dir: Path, rewards: list[float], temperature: float = 1.0) -> ScoredBatch:
    """Real completions and logprobs from the plain-torch engine."""
    from rlvr_ray.rollout.torch_engine import TorchEngine

    prompts = [VOCAB.encode("<boe> 3 4 +"), VOCAB.encode("<boe> 5 6 7 + *")]
    spec = SamplingSpec(n=4, temperature=temperature, max_tokens=6, stop_token_id=VOCAB.eoe, seed=3)
    completions = TorchEngine(str(model_dir)).generate(prompts, spec)
    return scored_batch(
        [prompts[c.prompt_index] for c in completions],
        [c.token_ids for c in completions],
        [c.logprobs for c in completions],
        rewards,
        4,
    )


def params_of(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.policy.named_parameters()}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_learner_logprobs_match_engine_on_policy(tmp_path: Path, temperature: float) -> None:
    learner, model_dir = make_learner(tmp_path, "grpo", temperature=temperature)
    batch = build_train_batch(engine_rollouts(model_dir, [0.0] * 8, temperature), VOCAB.pad)
    old = learner.old_outputs(batch)
    assert logprob_mismatch(old.logp, batch.engine_logp, batch.mask)["mismatch/logprob_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "dapo", "ppo"])
def test_one_step_changes_parameters(tmp_path: Path, algorithm: str) -> None:
    learner, model_dir = make_learner(tmp_path, algorithm)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    before = params_of(learner)
    stats = learner.update(batch)
    after = params_of(learner)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("policy.") for k in changed)
    if algorithm == "ppo":
        assert "value_head.weight" in changed and "loss/value" in stats
    assert stats["mismatch/logprob_abs_diff"] < 1e-4
    assert stats["ppo/optimizer_steps"] == 2


def test_equal_rewards_in_every_group_leave_grpo_policy_unchanged(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "grpo")
    batch = build_train_batch(engine_rollouts(model_dir, [1, 1, 1, 1, 0, 0, 0, 0]), VOCAB.pad)
    before = params_of(learner)
    learner.update(batch)
    assert all(torch.equal(before[k], v) for k, v in params_of(learner).items())


def test_zero_advantage_samples_are_not_computed_and_the_update_is_the_same(tmp_path: Path) -> None:
    # Group 1's scores are all 0.3: zero advantage, so its samples are left out of every pass, yet they count in
    # the normalisers (one that dropped them would double the gradient). A second update on a batch of equal
    # groups computes no sample at all: Adam must still step, on zero gradients (None would skip the step).
    runs = []
    for skip in (True, False):
        learner, model_dir = make_learner(tmp_path / str(skip), "grpo", ppo_epochs=2, max_grad_norm=1e6)
        learner.lean = skip
        mixed = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0.3, 0.3, 0.3, 0.3]), VOCAB.pad)
        equal = build_train_batch(engine_rollouts(model_dir, [1, 1, 1, 1, 0.3, 0.3, 0.3, 0.3]), VOCAB.pad)
        grads: list[dict[str, torch.Tensor | None]] = []
        learner.optimizer.register_step_pre_hook(
            lambda *_, learner=learner, grads=grads: grads.append(
                {k: None if p.grad is None else p.grad.clone() for k, p in learner.policy.named_parameters()}
            )
        )
        before = params_of(learner)
        tensors, _ = learner.prepare(mixed)
        stats = [learner.update(mixed), learner.update(equal)]
        runs.append((tensors, stats, before, params_of(learner), grads))
    (lean, lean_stats, before, lean_after, lean_grads), (full, full_stats, _, full_after, full_grads) = runs
    assert [s["update/trained_frac"] for s in lean_stats] == [0.5, 0.0]
    assert [s["update/trained_frac"] for s in full_stats] == [1.0, 1.0]
    assert torch.equal(lean.old.logp[4:], torch.zeros_like(lean.old.logp[4:]))  # not computed
    on = mixed.mask[:4]  # past a row's end a pass reads padding, whose logprobs depend on the bucket
    torch.testing.assert_close(lean.old.logp[:4] * on, full.old.logp[:4] * on, rtol=0, atol=1e-6)
    assert len(lean_grads) == len(full_grads) == 8
    for step, (lean_step, full_step) in enumerate(zip(lean_grads, full_grads, strict=True)):
        for name, grad in full_step.items():
            assert grad is not None and lean_step[name] is not None, (step, name)
            torch.testing.assert_close(lean_step[name], grad, rtol=1e-5, atol=1e-7, msg=f"step {step} {name}")
    # Adam turns the ~1e-8 rounding of near-zero gradients into ~1e-6 in the weights; the update moves them ~1e-2.
    assert max(float((full_after[k] - before[k]).abs().max()) for k in before) > 1e-2
    for name, value in full_after.items():
        torch.testing.assert_close(lean_after[name], value, rtol=0, atol=2e-5, msg=name)


def test_kl_loss_is_exactly_zero_at_the_reference_then_the_hand_computed_k3(tmp_path: Path) -> None:
    # One mini-batch per update, so loss/kl is measured before that update's optimizer step.
    learner, model_dir = make_learner(tmp_path, "grpo", kl_coef=0.1, mini_batch_size=8)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    first = learner.update(batch)
    assert first["loss/kl"] == 0.0  # policy == reference
    old = learner.old_outputs(batch)
    assert old.ref_logp is not None
    # k3 per token by hand: exp(ref - logp) - (ref - logp) - 1; grpo aggregates by sequence then over sequences.
    d = (old.ref_logp - old.logp).double()
    k3 = (d.exp() - d - 1) * batch.mask
    expected = float((k3.sum(-1) / batch.mask.sum(-1)).mean())
    second = learner.update(batch)
    assert expected > 1e-6
    assert second["loss/kl"] == pytest.approx(expected, rel=1e-4)
    assert "reward/kl" not in second


def test_reinforce_pp_puts_token_kl_in_the_reward(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "reinforce_pp", kl_coef=0.5, learning_rate=0.05, mini_batch_size=8)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    learner.update(batch)  # move away from the reference
    stats = learner.update(batch)
    assert "loss/kl" not in stats and stats["reward/kl"] > 1e-6
    old = learner.old_outputs(batch)
    _, returns = learner.advantages(batch, old)
    assert old.ref_logp is not None
    # Return-to-go by hand (gamma = 1): score at the last token, minus 0.5 * k3 at every token, summed backwards.
    kl = (torch.exp(old.ref_logp - old.logp) - (old.ref_logp - old.logp) - 1).tolist()
    for i in range(len(batch)):
        positions = batch.mask[i].nonzero().flatten().tolist()
        running = 0.0
        for j in reversed(positions):
            running += -0.5 * kl[i][j] + (float(batch.scores[i]) if j == positions[-1] else 0.0)
            assert float(returns[i, j]) == pytest.approx(running, abs=1e-5)


def test_early_stopping_stops_after_exactly_one_epoch(tmp_path: Path) -> None:
    learner, model_dir = make_learner(
        tmp_path, "grpo", ppo_epochs=4, early_stopping=True, target_kl=1e-12, learning_rate=0.05
    )
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    stats = learner.update(batch)
    assert stats["ppo/early_stopped"] == 1.0
    assert stats["ppo/optimizer_steps"] == 2  # one epoch of 2 mini-batches
    learner.cfg = learner.cfg.model_copy(update={"target_kl": 1e6})
    stats = learner.update(batch)
    assert stats["ppo/early_stopped"] == 0.0 and stats["ppo/optimizer_steps"] == 8


def surrogate(learner: Learner, batch: TrainBatch, adv: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean advantage-weighted logprob of the batch's tokens under the current policy."""
    return float(masked_mean(adv * learner.old_outputs(batch).logp, mask))


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "dapo", "ppo"])
def test_one_update_increases_the_surrogate_objective(tmp_path: Path, algorithm: str) -> None:
    # A sign-flipped loss also changes the parameters; only the right sign raises the objective it was given.
    learner, model_dir = make_learner(tmp_path, algorithm, learning_rate=1e-3, mini_batch_size=8)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    tensors, _ = learner.prepare(batch)
    before = surrogate(learner, batch, tensors.adv, tensors.mask)
    learner.update(batch)
    after = surrogate(learner, batch, tensors.adv, tensors.mask)
    assert after > before + 1e-4


@pytest.mark.parametrize("algorithm", ["rloo", "grpo", "dr_grpo", "dapo", "reinforce_pp", "ppo"])
def test_one_micro_batch_and_four_give_the_same_gradient(tmp_path: Path, algorithm: str) -> None:
    grads = []
    for accumulation in (1, 4):
        learner, model_dir = make_learner(
            tmp_path / str(accumulation), algorithm, mini_batch_size=8, gradient_accumulation_steps=accumulation,
            max_grad_norm=1e6,
        )  # fmt: skip
        batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
        learner.update(batch)
        grads.append({k: p.grad for k, p in learner.policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_dapo_drops_equal_reward_groups_from_the_token_mean(tmp_path: Path) -> None:
    # Group 1 has equal rewards: it must not dilute the loss, so the gradient is that of group 0 alone.
    grads, stats = [], []
    for keep_all in (True, False):
        learner, model_dir = make_learner(tmp_path / str(keep_all), "dapo", mini_batch_size=8, max_grad_norm=1e6)
        batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 1, 1, 1, 1]), VOCAB.pad)
        if not keep_all:
            learner.cfg = learner.cfg.model_copy(update={"batch_size": 4, "mini_batch_size": 4})
            batch = batch.select(batch.group_ids == 0)
        stats.append(learner.update(batch))
        grads.append({k: p.grad for k, p in learner.policy.named_parameters() if p.grad is not None})
    assert stats[0]["dynamic_sampling/kept_frac"] == 0.5 and stats[1]["dynamic_sampling/kept_frac"] == 1.0
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_dapo_overlong_punishment_by_hand(tmp_path: Path) -> None:
    # max 6 tokens, buffer 2: lengths up to 4 pay nothing, 5 pays 0.5, 6 pays 1.
    learner, model_dir = make_learner(tmp_path, "dapo", max_generation_length=6, overlong_buffer=2)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    lengths = batch.mask.sum(-1).tolist()
    penalty = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: -0.5, 6: -1.0}
    scores, _, stats = learner.shaped_scores(batch)
    expected = [float(r) + penalty[int(n)] for r, n in zip(batch.scores.tolist(), lengths, strict=True)]
    assert scores.tolist() == pytest.approx(expected)
    assert stats["reward/overlong_penalty_mean"] == pytest.approx(sum(penalty[int(n)] for n in lengths) / 8)
    assert any(n >= 5 for n in lengths)  # the case is exercised


def stale_batch(model_dir: Path, versions: list[int], logp_shift: list[float]) -> TrainBatch:
    scored = engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0])
    scored.rollouts.policy_version[:] = versions
    for i, shift in enumerate(logp_shift):
        scored.rollouts.logprobs[i] = [lp + shift for lp in scored.rollouts.logprobs[i]]
    return build_train_batch(scored, VOCAB.pad, learner_version=5)


def test_build_train_batch_staleness() -> None:
    prompts = [VOCAB.encode("<boe> 1")] * 4
    scored = scored_batch(prompts, [[VOCAB.eoe]] * 4, [[0.0]] * 4, range(4), 2)
    scored.rollouts.policy_version[:] = [3, 3, 2, 1]
    assert build_train_batch(scored, VOCAB.pad).staleness.tolist() == [0, 0, 1, 2]
    assert build_train_batch(scored, VOCAB.pad, learner_version=4).staleness.tolist() == [1, 1, 2, 3]
    with pytest.raises(ValueError, match="newer than learner version 2"):
        build_train_batch(scored, VOCAB.pad, learner_version=2)


def test_on_policy_is_weights_are_exactly_one_and_the_loss_is_the_old_formula(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "rloo", mini_batch_size=8)
    batch = stale_batch(model_dir, [5] * 8, [-0.3] * 8)  # engine logprobs off, but every sample is on-policy
    tensors, stats = learner.prepare(batch)
    assert tensors.is_weight is None
    assert stats["offpolicy/is_weight_mean"] == 1.0 and stats["offpolicy/is_clipped_frac"] == 0.0
    loss, _, _ = learner.micro_step_loss(batch, tensors, tensors.mask.sum())
    logp = learner.old_outputs(batch).logp
    ratio = torch.exp(logp - tensors.old.logp)
    old_formula = masked_mean(torch.maximum(-tensors.adv * ratio, -tensors.adv * ratio.clamp(0.8, 1.2)), batch.mask)
    assert torch.equal(loss, old_formula)


def test_one_optimizer_step_takes_its_proximal_logprobs_from_its_own_training_pass(tmp_path: Path) -> None:
    # One mini-batch per update: the lean learner runs no separate proximal pass; its training pass gives the
    # proximal logprobs (detached) and the IS weights of the stale samples. Gradient and stats must be the same.
    runs = []
    for lean in (True, False):
        learner, model_dir = make_learner(tmp_path / str(lean), "rloo", mini_batch_size=8, is_cap=2.0)
        learner.lean = lean
        rows: list[int] = []
        proximal_pass = learner.old_outputs

        def counting(batch: TrainBatch, index: torch.Tensor | None = None, proximal_pass=proximal_pass, rows=rows):
            rows.append(len(batch) if index is None else len(index))
            return proximal_pass(batch, index)

        learner.old_outputs = counting  # type: ignore[method-assign]
        batch = stale_batch(model_dir, [5, 5, 4, 4, 3, 3, 3, 3], [0.0, -0.3, -0.3, -0.3, -1.0, -1.0, -1.0, -1.0])
        stats = learner.update(batch)
        grads = {k: p.grad for k, p in learner.policy.named_parameters() if p.grad is not None}
        runs.append((rows, stats, grads))
    (lean_rows, lean_stats, lean_grads), (full_rows, full_stats, full_grads) = runs
    assert lean_rows == [0] and full_rows == [8]
    for key in ("offpolicy/is_weight_mean", "offpolicy/is_weight_max", "offpolicy/is_clipped_frac",
                "mismatch/logprob_abs_diff"):  # fmt: skip
        assert lean_stats[key] == pytest.approx(full_stats[key], abs=1e-6), key
    assert lean_stats["offpolicy/is_clipped_frac"] > 0  # rows 4-7 are clipped at the cap
    for name, grad in full_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_stale_samples_get_the_truncated_importance_ratio(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "rloo", is_cap=2.0)
    # samples 0-1 on-policy, 2-3 one version stale with behaviour logp 0.3 lower, 4-7 two stale, 1.0 lower.
    batch = stale_batch(model_dir, [5, 5, 4, 4, 3, 3, 3, 3], [0.0, -0.3, -0.3, -0.3, -1.0, -1.0, -1.0, -1.0])
    tensors, stats = learner.prepare(batch)
    assert tensors.is_weight is not None
    w = tensors.is_weight * batch.mask
    prox = tensors.old.logp
    for i in range(8):
        on = batch.mask[i] > 0
        if i < 2:
            assert torch.equal(w[i][on], torch.ones(int(on.sum())))  # exactly 1, though row 1's engine logp is off
        else:
            expected = torch.exp(prox[i] - batch.engine_logp[i]).clamp(max=2.0)[on]
            torch.testing.assert_close(w[i][on], expected)
            assert abs(float(w[i][on][0]) - (math.exp(0.3) if i < 4 else 2.0)) < 1e-3
    stale_tokens = float(batch.mask[2:].sum())
    assert stats["offpolicy/is_weight_max"] == pytest.approx(2.0)
    assert stats["offpolicy/is_clipped_frac"] == pytest.approx(float(batch.mask[4:].sum()) / stale_tokens, abs=1e-6)
    update = learner.update(batch)
    assert update["offpolicy/is_weight_max"] == pytest.approx(2.0)


def test_kl_adaptive_lr_cuts_the_rate_after_a_step_over_the_band_and_constant_keeps_it(tmp_path: Path) -> None:
    rewards = [1, 0, 0, 1, 0, 1, 1, 0]
    learner, model_dir = make_learner(tmp_path, "grpo", lr_control="kl_adaptive", lr_control_target_kl=1e-9)
    batch = build_train_batch(engine_rollouts(model_dir, rewards), VOCAB.pad)
    stats = learner.update(batch)
    assert stats["update/lr"] == 1e-2  # the rate this step used; the next one is cut
    assert stats["update/step_kl"] > 2e-9
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 1.5, rel=1e-12)
    assert learner.update(batch)["update/lr"] == pytest.approx(1e-2 / 1.5, rel=1e-12)
    # a target far above anything a step does: the rate grows back, but never past learning_rate
    learner.cfg = learner.cfg.model_copy(update={"lr_control_target_kl": 1e6})
    learner.update(batch)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 1.5, rel=1e-12)  # cut twice, up once
    learner.update(batch)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2, rel=1e-12)
    learner.update(batch)
    assert learner.optimizer.param_groups[0]["lr"] == 1e-2  # held at the ceiling
    constant, _ = make_learner(tmp_path / "constant", "grpo")
    stats = constant.update(batch)
    assert stats["update/lr"] == 1e-2 and constant.optimizer.param_groups[0]["lr"] == 1e-2
    assert stats["update/step_kl"] > 0


def test_step_kl_is_the_token_mean_of_the_approx_kl_over_the_optimizer_steps(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "grpo", ppo_epochs=2, early_stopping=True, target_kl=1e6)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    sums = torch.zeros(2, dtype=torch.float64)
    step = learner._optimizer_step

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        stats, kl = step(*args, **kwargs)
        sums.add_(kl)
        return stats, kl

    learner._optimizer_step = recording  # type: ignore[method-assign]
    stats = learner.update(batch)
    assert stats["ppo/optimizer_steps"] == 4 and float(sums[0]) > 0
    assert stats["update/step_kl"] == pytest.approx(float(sums[0] / sums[1]), rel=1e-12)
