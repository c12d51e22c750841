"""rlvr_ray.placement: the plan lists every role with what run.py asks Ray for; main --dry-run prints it."""

from __future__ import annotations

import pytest

from rlvr_ray.config import load_config
from rlvr_ray.placement import format_plan, placement_plan, sweep_plan


def test_large_gpu_config_plan() -> None:
    plan = placement_plan(load_config("train_rlvr_large"))
    roles = {role.role: role for role in plan.roles}
    assert list(roles) == ["driver", "train_controller", "rollout", "verifier", "learner"]
    assert (roles["rollout"].count, roles["rollout"].needs()) == (2, {"CPU": 4, "GPU": 1, "rollout": 1})
    assert (roles["verifier"].count, roles["verifier"].needs()) == (8, {"CPU": 1, "verifier": 1})
    assert (roles["learner"].count, roles["learner"].needs()) == (2, {"CPU": 4, "GPU": 1, "learner": 1})
    assert roles["train_controller"].needs() == {} and roles["train_controller"].on_driver_node
    assert not roles["driver"].is_actor and roles["driver"] not in plan.actors()
    assert plan.totals() == {"CPU": 24, "GPU": 4, "rollout": 2, "verifier": 8, "learner": 2}


def test_overrides_change_the_plan() -> None:
    plan = placement_plan(load_config("train_rlvr_test", ["learner.use_gpu=true", "learner.num_workers=3"]))
    learner = next(role for role in plan.roles if role.role == "learner")
    assert (learner.count, learner.needs()) == (3, {"CPU": 1, "GPU": 1})


def test_format_plan_shows_roles_resources_and_unpinned_roles() -> None:
    text = format_plan(placement_plan(load_config("train_rlvr_large")))
    assert "rollout           2      4    1    rollout (1)" in text
    assert "RayTrainWorker" in text and "RolloutWorker actor (RolloutGroup), vllm engine" in text
    assert text.splitlines()[-1] == "total reserved at once: CPU 24, GPU 4, rollout 2, verifier 8, learner 2"
    unpinned = format_plan(placement_plan(load_config("train_rlvr_test")))
    assert unpinned.splitlines()[-1] == "not pinned to a worker group (no custom resource): rollout, verifier, learner"


@pytest.mark.parametrize("name", ["train_rlvr_test", "cluster_cpu_local"])
def test_main_dry_run_prints_the_plan_and_starts_nothing(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from rlvr_ray.main import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # train_rlvr_test is then a local run: no cluster checks fail

    assert main(["--dry-run", "--config-name", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith("placement plan") and "learner" in out
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized(), "a dry run must not start Ray"


def test_sweep_plan_multiplies_one_trial_and_adds_the_trial_actors() -> None:
    trial = placement_plan(load_config("train_rlvr_large"))
    plan = sweep_plan(trial, concurrent_trials=3, trial_cpus=0.5)
    roles = {role.role: role for role in plan.roles}
    assert roles["tune_trial"].count == 3 and roles["tune_trial"].needs() == {"CPU": 0.5}
    assert roles["rollout"].count == 6 and roles["rollout"].needs() == {"CPU": 4, "GPU": 1, "rollout": 1}
    assert roles["train_controller"].count == 3 and not roles["train_controller"].on_driver_node
    assert plan.totals()["GPU"] == 3 * trial.totals()["GPU"]
