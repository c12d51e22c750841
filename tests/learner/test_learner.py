"""The learner: batch alignment, reward placement, the logprob-mismatch check and real optimizer steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlvr_ray.config import ModelConfig, TrainingConfig
from rlvr_ray.learner.batch import build_train_batch, shard_by_groups
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


def test_kl_term_is_logged_and_zero_before_any_update(tmp_path: Path) -> None:
    learner, model_dir = make_learner(tmp_path, "grpo", kl_coef=0.1, ppo_epochs=1)
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    stats = learner.update(batch)
    assert "loss/kl" in stats and stats["loss/kl"] >= 0.0


def test_early_stopping_stops_after_first_epoch(tmp_path: Path) -> None:
    learner, model_dir = make_learner(
        tmp_path, "grpo", ppo_epochs=4, early_stopping=True, target_kl=1e-12, learning_rate=0.05
    )
    batch = build_train_batch(engine_rollouts(model_dir, [1, 0, 0, 1, 0, 1, 1, 0]), VOCAB.pad)
    stats = learner.update(batch)
    assert stats["ppo/early_stopped"] == 1.0
    assert stats["ppo/optimizer_steps"] < 8
