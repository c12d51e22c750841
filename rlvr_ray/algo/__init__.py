"""4. ADVANTAGE + LOSS: pure tensor functions with registries by name (imports torch only; no ray, vllm, config).

- :mod:`rlvr_ray.algo.advantages`: ``ADVANTAGE_ESTIMATORS`` (gae, grpo, dr_grpo, rloo, reinforce_pp),
  ``AdvantageInputs``, ``compute_advantages``, ``token_level_rewards``.
- :mod:`rlvr_ray.algo.losses`: ``ppo_clip_loss``, ``value_loss``, ``entropy_from_logits``, ``aggregate`` and
  ``LOSS_AGGREGATORS`` (token_mean, seq_mean_token_mean, seq_mean_token_sum_norm).
- :mod:`rlvr_ray.algo.kl`: ``kl_penalty`` and ``KL_ESTIMATORS`` (k1, k2, k3).
- :mod:`rlvr_ray.algo.presets`: ``PRESETS`` (ppo, grpo, dr_grpo, rloo, reinforce_pp, dapo), ``resolve_preset``.
- :mod:`rlvr_ray.algo.lr_control`: ``LR_CONTROLLERS`` (constant, kl_adaptive): the next step's learning rate
  from this step's approx KL.
"""

from rlvr_ray.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    get_advantage_estimator,
    token_level_rewards,
)
from rlvr_ray.algo.kl import KL_ESTIMATORS, kl_penalty
from rlvr_ray.algo.losses import (
    LOSS_AGG_MODES,
    LOSS_AGGREGATORS,
    aggregate,
    entropy_from_logits,
    ppo_clip_loss,
    value_loss,
)
from rlvr_ray.algo.lr_control import LR_CONTROLLERS, LRBounds, get_lr_controller
from rlvr_ray.algo.masked import masked_mean, masked_whiten
from rlvr_ray.algo.presets import PRESETS, AlgorithmPreset, get_preset, resolve_preset

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATORS",
    "LOSS_AGG_MODES",
    "LR_CONTROLLERS",
    "PRESETS",
    "AdvantageInputs",
    "AlgorithmPreset",
    "LRBounds",
    "aggregate",
    "compute_advantages",
    "entropy_from_logits",
    "get_advantage_estimator",
    "get_lr_controller",
    "get_preset",
    "kl_penalty",
    "masked_mean",
    "masked_whiten",
    "ppo_clip_loss",
    "resolve_preset",
    "token_level_rewards",
    "value_loss",
]
