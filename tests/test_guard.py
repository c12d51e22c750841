"""The rules that end a run before its step count (rlvr_ray/guard.py), and how a new driver reads them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlvr_ray.config import ConfigError, load_config
from rlvr_ray.guard import (
    HELDOUT_GUARD,
    HOW_TO_EXTEND,
    TIME_BUDGET,
    GuardCheck,
    HeldOut,
    better,
    budget_spent,
    check_heldout,
    competence,
    competence_line,
    guard_line,
    reason_holds,
    watched,
)

N = {1: 107, 2: 200, 3: 200, 4: 200}


def evals(*accuracies: float) -> HeldOut:
    return HeldOut(dict(zip(N, accuracies, strict=True)), dict(N))


def test_heldout_guard_counts_a_fall_in_standard_errors() -> None:
    # Measured on the default RL config (docs/results.md): a rising run's early dip from 0.687 ...
    dip = check_heldout(evals(0.832, 0.79, 0.64, 0.485), evals(0.813, 0.75, 0.595, 0.44), 3.0)
    assert dip.drop == pytest.approx(0.037, abs=1e-3) and 1.0 < dip.z < 2.0 and not dip.tripped
    # ... and a 0.98 policy taken to 0.92 by too high a learning rate: a smaller fall, but far outside the noise.
    fall = check_heldout(evals(1.0, 1.0, 0.985, 0.94), evals(0.981, 0.95, 0.92, 0.815), 3.0)
    assert fall.drop == pytest.approx(0.065, abs=1e-3) and fall.z > 5.0 and fall.tripped
    assert not check_heldout(evals(1.0, 1.0, 0.985, 0.94), evals(0.981, 0.95, 0.92, 0.815), None).tripped  # off
    rise = check_heldout(evals(0.5, 0.5, 0.5, 0.5), evals(0.6, 0.6, 0.6, 0.6), 0.1)
    assert rise.drop < 0 and rise.z < 0 and not rise.tripped
    assert check_heldout(None, evals(0.0, 0.0, 0.0, 0.0), 3.0) == GuardCheck(0.0, 0.0, False)  # nothing to fall from
    collapse = check_heldout(evals(1.0, 1.0, 1.0, 1.0), evals(0.0, 0.0, 0.0, 0.0), 3.0)  # no binomial noise at all
    assert collapse.tripped and math.isfinite(collapse.z)


def test_the_guard_watches_the_trained_complexities_and_keeps_the_best() -> None:
    rows = [(1, 0.9, 107), (2, 0.8, 200), (5, 0.1, 200), (6, 0.1, 200)]
    view = watched(rows, (1, 4))
    assert view.accuracy == {1: 0.9, 2: 0.8} and view.n == {1: 107, 2: 200}
    assert watched(rows, (7, 8)).accuracy.keys() == {1, 2, 5, 6}  # none inside: all of them
    assert HeldOut.from_json(json.loads(json.dumps(view.to_json()))) == view  # through a checkpoint's loop.json
    low, high = evals(0.1, 0.1, 0.1, 0.1), evals(0.2, 0.2, 0.2, 0.2)
    assert better(None, low) == low and better(low, high) == high and better(high, low) == high


def test_an_early_stop_holds_until_its_setting_changes() -> None:
    assert budget_spent(60.0, 60.0) and not budget_spent(60.0, 59.9) and not budget_spent(None, 1e9)
    assert reason_holds(TIME_BUDGET, 60.0, 61.0, "warn")
    assert not reason_holds(TIME_BUDGET, 120.0, 61.0, "warn")  # budget raised: the run goes on
    assert not reason_holds(TIME_BUDGET, None, 61.0, "warn")
    assert reason_holds(HELDOUT_GUARD, None, 0.0, "stop")
    assert not reason_holds(HELDOUT_GUARD, None, 0.0, "warn")
    assert not reason_holds(None, 1.0, 5.0, "stop")


def test_guard_line_names_the_numbers_and_what_happens() -> None:
    best, now = evals(1.0, 1.0, 0.985, 0.94), evals(0.981, 0.95, 0.92, 0.815)
    line = guard_line(49, check_heldout(best, now, 3.0), best, now, 3.0, "stop")
    assert "(mean k1-4) 0.916 after step 50 is 0.065 below the best so far (0.981), 6.0 standard errors" in line
    assert "training.heldout_guard_z=3" in line and "stopping after the next step" in line
    assert "warning only" in guard_line(3, check_heldout(best, now, 3.0), best, now, 3.0, "warn")


# Always giving the most common answer of each held-out set (p=13, the default eval seed): k1-4.
CONSTANT = {1: 0.131, 2: 0.115, 3: 0.110, 4: 0.120}


def test_a_warm_start_no_better_than_a_constant_answer_gets_the_warning() -> None:
    # The three SFT checkpoints RL did not move (docs/results.md): 150 and 300 SFT steps, and loss on prompts.
    for chance in (evals(0.093, 0.115, 0.130, 0.090), evals(0.131, 0.130, 0.095, 0.095), evals(0.065, 0.13, 0.11, 0.1)):
        margin, z = competence(chance, CONSTANT)
        assert abs(margin) < 0.03 and z < 2.0
        line = competence_line(chance, CONSTANT)
        assert line is not None and line.startswith("[warm start] held-out accuracy (mean k1-4) 0.")
        assert "(0.119)" in line and "sft.steps, sft.target_accuracy" in line
    # The least trained checkpoint RL did raise ("jump", 0.298): far above the floor, no warning.
    jump = evals(0.477, 0.380, 0.215, 0.130)
    margin, z = competence(jump, CONSTANT)
    assert margin == pytest.approx(0.182, abs=1e-3) and z > 10 and competence_line(jump, CONSTANT) is None


def test_competence_is_counted_in_standard_errors_of_the_eval() -> None:
    constant = {1: 0.1}
    small, large = HeldOut({1: 0.2}, {1: 50}), HeldOut({1: 0.2}, {1: 2000})
    assert competence(small, constant)[0] == competence(large, constant)[0] == pytest.approx(0.1)
    assert competence(small, constant)[1] == pytest.approx(0.1 / math.sqrt(0.2 * 0.8 / 50))
    line = competence_line(small, constant)  # 1.8 SE on 50 problems: the same margin is noise there ...
    assert line is not None and line.startswith("[warm start] held-out accuracy (k1) 0.200")
    assert competence_line(large, constant) is None  # ... and 11 SE on 2000


def test_guard_settings_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="heldout_guard_action"):
        load_config("train_rlvr_test", ["training.heldout_guard_action=halt"])
    with pytest.raises(ConfigError, match="heldout_guard_z"):
        load_config("train_rlvr_test", ["training.heldout_guard_z=0"])
    assert load_config("train_rlvr_test", ["training.heldout_guard_z=null"]).training.heldout_guard_z is None


@pytest.mark.parametrize(
    ("stopped", "settings", "says"),
    [
        (TIME_BUDGET, ["training.time_budget_s=30"], "by its time budget (training.time_budget_s) after 3 steps"),
        (TIME_BUDGET, ["training.time_budget_s=300"], "resuming"),
        (HELDOUT_GUARD, ["training.heldout_guard_action=stop"], "by its held-out guard after 3 steps"),
        (HELDOUT_GUARD, ["training.heldout_guard_action=warn"], "resuming"),
    ],
)
def test_a_new_driver_says_why_a_stopped_run_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stopped: str, settings: list[str], says: str
) -> None:
    from rlvr_ray.learner.checkpoint import CheckpointStore, run_fingerprint
    from rlvr_ray.run import check_resume

    cfg = load_config("train_rlvr_test", [f"output_dir={tmp_path / 'run'}", "training.ppo_steps=50", *settings])
    store = CheckpointStore.for_config(cfg)
    store.write_json(f"{store.root}/rl-old/step_000003/fingerprint.json", run_fingerprint(cfg))
    store.set_latest("rl-old", "step_000003", 3, train_s=45.0, stopped=stopped)
    assert check_resume(cfg, store) == store.latest()
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    if says != "resuming":
        assert f"{HOW_TO_EXTEND[stopped]}, or pass another output_dir" in err
