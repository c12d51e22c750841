"""When a run ends before its step count: its time budget and the held-out guard (pure rules; the controller
applies them, the driver reads them to say why a run is already finished).

- **Time budget** (``training.time_budget_s``): the step that starts with the train clock at or past the budget is
  the last one.
- **Held-out guard** (``training.heldout_guard_z``): after each held-out eval, the mean accuracy over the eval
  complexities that training samples from is compared with the best eval so far, the starting policy's included.
  A fall of more than ``heldout_guard_z`` standard errors (binomial, of the difference of the two evals) trips the
  guard: one warning line and the ``guard/trips`` metric; with ``training.heldout_guard_action: stop`` the next
  step is the last one. Counting in standard errors keeps the guard quiet on noise whatever the eval's size, and
  lets it see a fall of a few points in a policy that was near 100% (measured: the default RL settings took a
  policy at mean k1-4 0.98 to 0.92 in 50 steps).

A run that stopped early records why (``stop_reason``). Run again, it trains no further while that reason still
holds (the budget not raised, the guard still set to stop), exactly as the uninterrupted run ended; once it no
longer holds, the run carries on from where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MIN_SE = 1e-6
"""Floor of the standard error: two evals at exactly 0 or 1 everywhere have none, and z stays finite for MLflow."""
TIME_BUDGET = "time_budget"
HELDOUT_GUARD = "heldout_guard"

LABELS = {TIME_BUDGET: "time budget (training.time_budget_s)", HELDOUT_GUARD: "held-out guard"}
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
class HeldOut:
    """One held-out evaluation over the complexities the guard watches: accuracy and problem count per complexity."""

    accuracy: dict[int, float]
    n: dict[int, int]

    def mean(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    def variance_of_mean(self) -> float:
        """Binomial sampling variance of :meth:`mean` (independent complexities, ``n`` problems each)."""
        terms = [p * (1.0 - p) / max(self.n[k], 1) for k, p in self.accuracy.items()]
        return sum(terms) / len(terms) ** 2

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"accuracy": {str(k): v for k, v in self.accuracy.items()}, "n": {str(k): v for k, v in self.n.items()}}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, float]]) -> HeldOut:
        accuracy = {int(k): float(v) for k, v in data["accuracy"].items()}
        return cls(accuracy, {int(k): int(v) for k, v in data["n"].items()})


def watched(rows: Iterable[tuple[int, float, int]], trained: tuple[int, int]) -> HeldOut:
    """The guard's view of eval rows ``(complexity, accuracy, n)``: the complexities training samples from (those
    outside it, e.g. k5-6 extrapolation, sit near chance and would only dilute a fall), or all when none is."""
    rows = list(rows)
    inside = [r for r in rows if trained[0] <= r[0] <= trained[1]] or rows
    return HeldOut({k: acc for k, acc, _ in inside}, {k: n for k, _, n in inside})


@dataclass(frozen=True)
class GuardCheck:
    """``drop``: how far the mean accuracy is below the best eval so far (negative: above it); ``z``: that drop in
    standard errors of the difference of the two evals; ``tripped``: by more than the allowed number of them."""

    drop: float
    z: float
    tripped: bool


def check_heldout(best: HeldOut | None, now: HeldOut, max_z: float | None) -> GuardCheck:
    """The guard's verdict on one held-out eval. ``best`` is None before any eval (nothing to fall from)."""
    if best is None:
        return GuardCheck(0.0, 0.0, False)
    drop = best.mean() - now.mean()
    se = max(math.sqrt(best.variance_of_mean() + now.variance_of_mean()), MIN_SE)
    z = drop / se
    return GuardCheck(drop, z, max_z is not None and drop > 0 and z > max_z)


def better(best: HeldOut | None, now: HeldOut) -> HeldOut:
    return now if best is None or now.mean() > best.mean() else best


def guard_line(step: int, check: GuardCheck, best: HeldOut, now: HeldOut, max_z: float, action: str) -> str:
    what = "stopping after the next step" if action == "stop" else "warning only (heldout_guard_action=warn)"
    ks = sorted(now.accuracy)
    return (
        f"[guard] held-out accuracy (mean k{ks[0]}-{ks[-1]}) {now.mean():.3f} after step {step + 1} is "
        f"{check.drop:.3f} below the best so far ({best.mean():.3f}), {check.z:.1f} standard errors, more than "
        f"training.heldout_guard_z={max_z:g}: {what}"
    )
