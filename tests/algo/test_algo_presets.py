"""Algorithm presets: the table, its agreement with the registries and the config's choices, and isolation."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from rlvr_ray.algo.advantages import ADVANTAGE_ESTIMATORS
from rlvr_ray.algo.kl import KL_ESTIMATORS
from rlvr_ray.algo.losses import LOSS_AGG_MODES
from rlvr_ray.algo.presets import PRESETS, AlgorithmPreset, get_preset, resolve_preset
from rlvr_ray.config import TrainingConfig


def literal_choices(field: str) -> set[str]:
    """The strings a Literal (or Literal | None) field of TrainingConfig allows."""
    choices: set[str] = set()
    pending = [TrainingConfig.model_fields[field].annotation]
    while pending:
        annotation = pending.pop()
        for arg in typing.get_args(annotation):
            if isinstance(arg, str):
                choices.add(arg)
            elif arg is not type(None):
                pending.append(arg)
    return choices


def test_preset_table() -> None:
    expected = {
        "ppo": AlgorithmPreset("gae", "token_mean", use_critic=True, clip_high=None),
        "grpo": AlgorithmPreset("grpo", "seq_mean_token_mean", use_critic=False, clip_high=None),
        "dr_grpo": AlgorithmPreset("dr_grpo", "seq_mean_token_sum_norm", use_critic=False, clip_high=None),
        "rloo": AlgorithmPreset("rloo", "token_mean", use_critic=False, clip_high=None),
        "reinforce_pp": AlgorithmPreset("reinforce_pp", "token_mean", kl_in_reward=True),
        "dapo": AlgorithmPreset("grpo", "token_mean", clip_high=0.28, dynamic_sampling=True, overlong_shaping=True),
    }
    assert expected == PRESETS


def test_config_kl_placement_tables_match_the_presets() -> None:
    # config.py cannot import algo (torch); its two tables must agree with the presets.
    from rlvr_ray import config

    assert {n for n, p in PRESETS.items() if not p.uses_token_rewards} == config._SCORE_ONLY_ALGORITHMS
    assert {n for n, p in PRESETS.items() if p.kl_in_reward} == config._KL_IN_REWARD_ALGORITHMS


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "dapo"])
def test_kl_in_reward_with_score_only_advantages_is_rejected(algorithm: str) -> None:
    with pytest.raises(ValueError, match=f"kl_in_reward=true has no effect with algorithm {algorithm}"):
        TrainingConfig(algorithm=algorithm, kl_coef=0.1, kl_in_reward=True)
    TrainingConfig(algorithm=algorithm, kl_coef=0.1, kl_in_reward=False)


def test_kl_placement_defaults_to_the_algorithm() -> None:
    assert TrainingConfig(algorithm="reinforce_pp").kl_in_reward_resolved
    assert not TrainingConfig(algorithm="reinforce_pp", kl_in_reward=False).kl_in_reward_resolved
    assert not TrainingConfig(algorithm="ppo").kl_in_reward_resolved
    assert TrainingConfig(algorithm="ppo", kl_in_reward=True).kl_in_reward_resolved


def test_k1_in_the_loss_is_rejected_but_allowed_in_the_reward() -> None:
    with pytest.raises(ValueError, match="k1 in the loss has a zero-mean gradient"):
        TrainingConfig(algorithm="grpo", kl_coef=0.1, kl_estimator="k1")
    with pytest.raises(ValueError, match="k1 in the loss"):
        TrainingConfig(algorithm="ppo", kl_coef=0.1, kl_estimator="k1")
    TrainingConfig(algorithm="ppo", kl_coef=0.1, kl_estimator="k1", kl_in_reward=True)
    TrainingConfig(algorithm="reinforce_pp", kl_coef=0.1, kl_estimator="k1")
    TrainingConfig(algorithm="grpo", kl_coef=0.0, kl_estimator="k1")  # no KL at all: nothing to reject


def test_presets_name_registered_functions() -> None:
    for preset in PRESETS.values():
        assert preset.advantage in ADVANTAGE_ESTIMATORS
        assert preset.loss_agg_mode in LOSS_AGG_MODES


def test_config_choices_match_the_registries() -> None:
    assert literal_choices("algorithm") == set(PRESETS)
    assert literal_choices("loss_agg_mode") == set(LOSS_AGG_MODES)
    assert literal_choices("kl_estimator") == set(KL_ESTIMATORS)


def test_unknown_preset_raises_with_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'grpoo'.*ppo, grpo, dr_grpo, rloo, reinforce_pp, dapo"):
        get_preset("grpoo")


def test_resolve_preset_applies_only_given_overrides() -> None:
    assert resolve_preset("dapo") == PRESETS["dapo"]
    assert resolve_preset("grpo", loss_agg_mode="token_mean", clip_high=0.3) == AlgorithmPreset(
        "grpo", "token_mean", clip_high=0.3
    )
    assert resolve_preset("dapo", loss_agg_mode="seq_mean_token_mean").clip_high == 0.28
    with pytest.raises(ValueError, match="unknown algorithm"):
        resolve_preset("sac")


def test_algo_imports_only_torch() -> None:
    # The learner runs algo inside Ray Train workers; it must not drag in ray, vllm or the config layer.
    code = (
        "import sys, rlvr_ray.algo as a, rlvr_ray.algo.presets, rlvr_ray.algo.kl;"
        "bad = [m for m in ('ray', 'vllm', 'rlvr_ray.config', 'pydantic', 'jax') if m in sys.modules];"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_config_load_rejects_silent_kl_in_one_line() -> None:
    from rlvr_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config("train_rlvr_test", ["training.kl_coef=0.01", "training.kl_in_reward=true"])
    assert "kl_in_reward=true has no effect with algorithm grpo" in str(err.value)
    assert "\n" not in str(err.value)
