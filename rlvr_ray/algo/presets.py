"""Named algorithms as (advantage estimator, loss aggregation, critic?, clip-higher) presets.

``TrainingConfig.algorithm`` names one of :data:`PRESETS`; ``training.loss_agg_mode`` and
``training.cliprange_high`` override the preset's choice when set (see :func:`resolve_preset`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmPreset:
    """advantage: a key of ``ADVANTAGE_ESTIMATORS``; loss_agg_mode: a key of ``LOSS_AGGREGATORS``;
    use_critic: train a value head (PPO); clip_high: upper PPO clip epsilon, None for symmetric clipping;
    kl_in_reward: the KL penalty goes into the token rewards unless the config says otherwise (REINFORCE++);
    dynamic_sampling: drop groups whose scores are all equal from the loss (DAPO);
    overlong_shaping: add the soft overlong punishment to the scores (DAPO)."""

    advantage: str
    loss_agg_mode: str
    use_critic: bool = False
    clip_high: float | None = None
    kl_in_reward: bool = False
    dynamic_sampling: bool = False
    overlong_shaping: bool = False

    @property
    def uses_token_rewards(self) -> bool:
        """Whether the advantage estimator reads per-token rewards (so a KL penalty in the reward acts)."""
        return self.advantage in TOKEN_REWARD_ESTIMATORS


TOKEN_REWARD_ESTIMATORS = frozenset({"gae", "reinforce_pp"})
"""Advantage estimators that read token rewards; the others read one score per sequence."""

PRESETS: dict[str, AlgorithmPreset] = {
    "ppo": AlgorithmPreset("gae", "token_mean", use_critic=True),
    "grpo": AlgorithmPreset("grpo", "seq_mean_token_mean"),
    "dr_grpo": AlgorithmPreset("dr_grpo", "seq_mean_token_sum_norm"),
    "rloo": AlgorithmPreset("rloo", "token_mean"),
    # REINFORCE++ (arXiv 2501.03262): the KL to the reference is a per-token reward penalty by definition.
    "reinforce_pp": AlgorithmPreset("reinforce_pp", "token_mean", kl_in_reward=True),
    # DAPO (arXiv 2503.14476): GRPO advantages, token-level loss, clip-higher with eps_high = 0.28, dynamic
    # sampling (as a filter: groups with equal scores leave the loss) and soft overlong punishment.
    "dapo": AlgorithmPreset("grpo", "token_mean", clip_high=0.28, dynamic_sampling=True, overlong_shaping=True),
}


def get_preset(name: str) -> AlgorithmPreset:
    """The preset registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(PRESETS)}") from None


def resolve_preset(name: str, loss_agg_mode: str | None = None, clip_high: float | None = None) -> AlgorithmPreset:
    """The named preset with the config's explicit overrides applied (None keeps the preset's value).

    >>> resolve_preset("dapo", loss_agg_mode="seq_mean_token_mean").loss_agg_mode
    'seq_mean_token_mean'
    """
    preset = get_preset(name)
    return dataclasses.replace(
        preset,
        loss_agg_mode=preset.loss_agg_mode if loss_agg_mode is None else loss_agg_mode,
        clip_high=preset.clip_high if clip_high is None else clip_high,
    )
