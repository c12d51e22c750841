"""The rules that end a run before its step count (rlvr_ray/guard.py), and how a new driver reads them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rlvr_ray.config import ConfigError, load_config
from rlvr_ray.guard import HELDOUT_GUARD, TIME_BUDGET, budget_spent, check_heldout, guard_line, reason_holds


def test_heldout_guard_trips_only_past_the_allowed_drop() -> None:
    assert check_heldout(0.80, 0.76, 0.1).tripped is False  # a 0.04 dip, as the default config shows early on
    verdict = check_heldout(0.80, 0.65, 0.1)
    assert verdict.tripped and verdict.drop == pytest.approx(0.15)
    assert check_heldout(0.75, 0.5, 0.25).tripped is False  # exactly the allowed drop is allowed
    assert check_heldout(0.80, 0.95, 0.1).drop == pytest.approx(-0.15)  # above the best: negative
    assert check_heldout(0.80, 0.10, None).tripped is False  # guard off
    first = check_heldout(-math.inf, 0.0, 0.0)  # no eval yet and no baseline: nothing to fall from
    assert first.tripped is False and first.drop == 0.0
    assert check_heldout(0.5, 0.49, 0.0).tripped  # 0: any fall trips


def test_an_early_stop_holds_until_its_setting_changes() -> None:
    assert budget_spent(60.0, 60.0) and not budget_spent(60.0, 59.9) and not budget_spent(None, 1e9)
    assert reason_holds(TIME_BUDGET, 60.0, 61.0, "warn")
    assert not reason_holds(TIME_BUDGET, 120.0, 61.0, "warn")  # budget raised: the run goes on
    assert not reason_holds(TIME_BUDGET, None, 61.0, "warn")
    assert reason_holds(HELDOUT_GUARD, None, 0.0, "stop")
    assert not reason_holds(HELDOUT_GUARD, None, 0.0, "warn")
    assert not reason_holds(None, 1.0, 5.0, "stop")


def test_guard_line_names_the_numbers_and_what_happens() -> None:
    line = guard_line(step=99, accuracy=0.612, best=0.730, max_drop=0.1, action="stop")
    assert "0.612 after step 100" in line and "0.118 below the best so far (0.730)" in line
    assert "training.heldout_guard_drop=0.1" in line and "stopping after the next step" in line
    assert "warning only" in guard_line(3, 0.1, 0.5, 0.2, "warn")


def test_guard_settings_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="heldout_guard_action"):
        load_config("train_rlvr_test", ["training.heldout_guard_action=halt"])
    with pytest.raises(ConfigError, match="heldout_guard_drop"):
        load_config("train_rlvr_test", ["training.heldout_guard_drop=-0.1"])
    assert load_config("train_rlvr_test", ["training.heldout_guard_drop=null"]).training.heldout_guard_drop is None


@pytest.mark.parametrize(
    ("stopped", "settings", "says"),
    [
        (TIME_BUDGET, ["training.time_budget_s=30"], "stopped early by its time_budget after 3 steps"),
        (TIME_BUDGET, ["training.time_budget_s=300"], "resuming"),
        (HELDOUT_GUARD, ["training.heldout_guard_action=stop"], "heldout_guard_action=warn to train further"),
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
    assert says in capsys.readouterr().err

