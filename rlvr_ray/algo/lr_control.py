"""Learning-rate controllers: the next RL step's learning rate from how far this step moved the policy.

A controller is a pure function ``(lr, kl, bounds) -> next lr``: ``kl`` is the step's measured policy change, the
token mean of the approximate KL (k3) between the policy being updated and the proximal one (the policy before
the step), over all of the step's optimizer steps and learner ranks. It is what ``early_stopping`` compares with
``target_kl``, measured over the whole step instead of one epoch.

- ``constant``: the learning rate never changes.
- ``kl_adaptive``: the adaptive schedule of rl_games / Isaac Gym PPO, as a guard. The rate is divided by
  ``factor`` when the step's KL was above twice the target and multiplied by it when below half the target,
  within [``min_lr``, ``max_lr``] (the learner passes ``max_lr`` = the configured learning rate, so the guard only
  slows an update that moves the policy too far, and gives the speed back once it no longer does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LRBounds:
    """What a controller aims at and where it must stay: target KL per step, step factor, lowest and highest lr."""

    target_kl: float
    factor: float
    min_lr: float
    max_lr: float


def constant_lr(lr: float, kl: float, bounds: LRBounds) -> float:
    """The same learning rate whatever the step did.

    >>> constant_lr(1e-4, 5.0, LRBounds(0.01, 1.5, 1e-6, 1e-4))
    0.0001
    """
    return lr


def kl_adaptive_lr(lr: float, kl: float, bounds: LRBounds) -> float:
    """``lr / factor`` when ``kl > 2 * target_kl``, ``lr * factor`` when ``kl < target_kl / 2``, else ``lr``;
    then clamped to [min_lr, max_lr].

    >>> b = LRBounds(target_kl=0.01, factor=2.0, min_lr=1e-6, max_lr=1e-4)
    >>> kl_adaptive_lr(1e-4, 0.05, b), kl_adaptive_lr(5e-5, 0.001, b), kl_adaptive_lr(5e-5, 0.01, b)
    (5e-05, 0.0001, 5e-05)
    >>> kl_adaptive_lr(1e-4, 0.0, b), kl_adaptive_lr(1.5e-6, 1.0, b)  # held at the bounds
    (0.0001, 1e-06)
    """
    if kl > 2.0 * bounds.target_kl:
        lr = lr / bounds.factor
    elif kl < 0.5 * bounds.target_kl:
        lr = lr * bounds.factor
    return min(max(lr, bounds.min_lr), bounds.max_lr)


LR_CONTROLLERS: dict[str, Callable[[float, float, LRBounds], float]] = {
    "constant": constant_lr,
    "kl_adaptive": kl_adaptive_lr,
}


def get_lr_controller(name: str) -> Callable[[float, float, LRBounds], float]:
    """The controller registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return LR_CONTROLLERS[name]
    except KeyError:
        raise ValueError(f"unknown lr controller {name!r}; valid: {', '.join(LR_CONTROLLERS)}") from None
