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
    use_critic: train a value head (PPO); clip_high: upper PPO clip epsilon, None for symmetric clipping."""

    advantage: str
    loss_agg_mode: str
    use_critic: bool = False
    clip_high: float | None = None


PRESETS: dict[str, AlgorithmPreset] = {
    "ppo": AlgorithmPreset("gae", "token_mean", use_critic=True),
    "grpo": AlgorithmPreset("grpo", "seq_mean_token_mean"),
    "dr_grpo": AlgorithmPreset("dr_grpo", "seq_mean_token_sum_norm"),
    "rloo": AlgorithmPreset("rloo", "token_mean"),
    "reinforce_pp": AlgorithmPreset("reinforce_pp", "token_mean"),
    # DAPO (arXiv 2503.14476): GRPO advantages, token-level loss, clip-higher with eps_high = 0.28.
    "dapo": AlgorithmPreset("grpo", "token_mean", clip_high=0.28),
}


def get_preset(name: str) -> AlgorithmPreset:
    """The preset registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(PRESETS)}") from None


def resolve_preset(name: str, loss_agg_mode: str | None = None, clip_high: float | None = None) -> AlgorithmPreset:
    """The named preset with the config's explicit overrides applied (None keeps the preset's value).

    >>> resolve_preset("dapo", loss_agg_mode="seq_mean_token_mean")
    AlgorithmPreset(advantage='grpo', loss_agg_mode='seq_mean_token_mean', use_critic=False, clip_high=0.28)
    """
    preset = get_preset(name)
    return dataclasses.replace(
        preset,
        loss_agg_mode=preset.loss_agg_mode if loss_agg_mode is None else loss_agg_mode,
        clip_high=preset.clip_high if clip_high is None else clip_high,
    )
