"""When a run ends before its step count: its time budget and the held-out guard (pure rules; the controller
applies them, the driver reads them to say why a run is already finished).

- **Time budget** (``training.time_budget_s``): the step that starts with the train clock at or past the budget is
  the last one.
- **Held-out guard** (``training.heldout_guard_drop``): after each held-out eval, ``eval/accuracy`` (the mean over
  the eval complexities) is compared with the best so far, the starting policy's included. More than
  ``heldout_guard_drop`` below it trips the guard: one warning line and the ``guard/trips`` metric; with
  ``training.heldout_guard_action: stop`` the next step is the last one.

A run that stopped early records why (``stop_reason``). Run again, it trains no further while that reason still
holds (the budget not raised, the guard still set to stop), exactly as the uninterrupted run ended; once it no
longer holds, the run carries on from where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TIME_BUDGET = "time_budget"
HELDOUT_GUARD = "heldout_guard"

HOW_TO_EXTEND = {
    TIME_BUDGET: "raise training.time_budget_s to train further",
    HELDOUT_GUARD: "set training.heldout_guard_action=warn to train further",
}


def budget_spent(budget_s: float | None, train_s: float) -> bool:
    return budget_s is not None and train_s >= budget_s


def reason_holds(reason: str | None, budget_s: float | None, train_s: float, guard_action: str) -> bool:
    """Whether an early stop for ``reason`` would happen again under the current settings."""
    if reason == TIME_BUDGET:
        return budget_spent(budget_s, train_s)
    if reason == HELDOUT_GUARD:
        return guard_action == "stop"
    return False


@dataclass(frozen=True)
class GuardCheck:
    """``drop``: how far the held-out accuracy is below the best so far (negative: above it); ``tripped``: by more
    than the allowed drop."""

    drop: float
    tripped: bool


def check_heldout(best: float, accuracy: float, max_drop: float | None) -> GuardCheck:
    """The guard's verdict on one held-out eval. ``best`` is -inf before any eval (nothing to fall from)."""
    drop = best - accuracy if math.isfinite(best) else 0.0
    return GuardCheck(drop, max_drop is not None and drop > max_drop)


def guard_line(step: int, accuracy: float, best: float, max_drop: float, action: str) -> str:
    what = "stopping after the next step" if action == "stop" else "warning only (heldout_guard_action=warn)"
    return (
        f"[guard] held-out accuracy {accuracy:.3f} after step {step + 1} is {best - accuracy:.3f} below the best so "
        f"far ({best:.3f}), more than training.heldout_guard_drop={max_drop:g}: {what}"
    )
