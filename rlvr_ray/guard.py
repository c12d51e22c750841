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

Before RL, the starting policy is also checked against a policy that knows no arithmetic (:func:`competence`):
RL reinforces answers the policy already finds, so from a warm start no better than always giving the most common
answer the default settings have nothing to build on (docs/results.md, "Default config from several warm starts":
three such SFT checkpoints moved within noise in 150 steps). That gets one warning line; the run goes on.

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


COMPETENCE_Z = 2.0
"""A warm start within this many standard errors of the constant-answer accuracy (or below it) gets the warning."""


def competence(start: HeldOut, constant: dict[int, float]) -> tuple[float, float]:
    """(margin, z): how far the starting policy's mean held-out accuracy is above always giving each complexity's
    most common answer (``constant``, over the same complexities), and that margin in binomial standard errors of
    the policy's eval.

    >>> start = HeldOut({1: 0.5, 2: 0.3}, {1: 100, 2: 200})
    >>> margin, z = competence(start, {1: 0.13, 2: 0.11, 3: 0.1})
    >>> round(margin, 3), round(z, 1)
    (0.28, 9.4)
    """
    margin = start.mean() - sum(constant[k] for k in start.accuracy) / len(start.accuracy)
    return margin, margin / max(math.sqrt(start.variance_of_mean()), MIN_SE)


def competence_line(start: HeldOut, constant: dict[int, float]) -> str | None:
    """The warning for a warm start with no demonstrated competence, or None."""
    margin, z = competence(start, constant)
    if z >= COMPETENCE_Z:
        return None
    ks = sorted(start.accuracy)
    which, floor = (f"k{ks[0]}" if len(ks) == 1 else f"mean k{ks[0]}-{ks[-1]}"), start.mean() - margin
    return (
        f"[warm start] held-out accuracy ({which}) {start.mean():.3f} is not {COMPETENCE_Z:g} standard errors "
        f"above always giving the most common answer ({floor:.3f}): the policy shows no arithmetic for RL to "
        f"reinforce, and RL from such warm starts has not raised held-out accuracy; train the warm start further "
        f"(sft.steps, sft.target_accuracy) before RL"
    )


def guard_line(step: int, check: GuardCheck, best: HeldOut, now: HeldOut, max_z: float, action: str) -> str:
    what = "stopping after the next step" if action == "stop" else "warning only (heldout_guard_action=warn)"
    ks = sorted(now.accuracy)
    return (
        f"[guard] held-out accuracy (mean k{ks[0]}-{ks[-1]}) {now.mean():.3f} after step {step + 1} is "
        f"{check.drop:.3f} below the best so far ({best.mean():.3f}), {check.z:.1f} standard errors, more than "
        f"training.heldout_guard_z={max_z:g}: {what}"
    )
