"""Sweep files: parsing, validation against the config model, trial configs, table, best YAML (no Ray started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlvr_ray.config import ConfigError, config_dir, load_config
from rlvr_ray.sweep import (
    CASE,
    Space,
    SweepConfig,
    TrialRow,
    best_config_yaml,
    best_row,
    default_max_t,
    evals_per_run,
    format_table,
    load_sweep,
    resolve_sweep_path,
    reward_weights,
    trial_config,
    trial_params,
    validate_sweep,
)
from rlvr_ray.tune import last_error_line, local_resources, param_space, trial_bundles, trial_status, tune_domain

SHIPPED = sorted((config_dir() / "sweeps").glob("*.yaml"))


def sweep_of(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"space": {"training.learning_rate": {"choice": [1e-4]}}, **fields}))
    return path


def validated(tmp_path: Path, config: str = "train_rlvr_test", **fields: object) -> SweepConfig:
    return validate_sweep(load_config(config), load_sweep(sweep_of(tmp_path, **fields)))


def test_both_required_sweeps_ship() -> None:
    assert {p.stem for p in SHIPPED} >= {"reward_weights", "lr_kl"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("config", ["train_rlvr_model", "train_rlvr_test", "train_rlvr_large"])
def test_shipped_sweeps_validate_and_start_with_their_command(path: Path, config: str) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("#")
    command = f"python -m rlvr_ray.tune --config-name train_rlvr_model --sweep configs/sweeps/{path.name}"
    assert command in path.read_text()
    sweep = validate_sweep(load_config(config), load_sweep(path))
    assert sweep.name == path.stem and sweep.metric == "eval/accuracy" and sweep.mode == "max"
    # the grids that chose the defaults run every trial to its budget: one eval is too noisy to stop a trial on
    assert sweep.scheduler.type == ("fifo" if path.stem in {"defaults", "lr_grid"} else "asha")


OLD_REWARD_WEIGHTS = """
name: reward_weights
overrides:
  training.reward_type: combined
space:
  training.boxed_weight: {grid: [0.0, 0.3, 0.6]}
  training.correct_weight: {grid: [0.4, 0.7, 1.0]}
"""


def test_the_old_reward_weights_sweep_is_rejected_as_repeating_runs(tmp_path: Path) -> None:
    # under GRPO boxed 0 with correct 0.4, 0.7 or 1.0 is one run three times (docs/results.md measured exactly that)
    path = tmp_path / "old.yaml"
    path.write_text(OLD_REWARD_WEIGHTS)
    with pytest.raises(ConfigError) as err:
        validate_sweep(load_config("train_rlvr_model"), load_sweep(path))
    message = str(err.value)
    assert "\n" not in message and "are the same run" in message
    assert "'training.boxed_weight': 0.0, 'training.correct_weight': 0.4" in message
    assert "'training.boxed_weight': 0.0, 'training.correct_weight': 0.7" in message
    assert "grpo divides each group's rewards by their std" in message


def test_the_shipped_reward_sweep_varies_what_changes_training() -> None:
    base = load_config("train_rlvr_model")
    sweep = validate_sweep(base, load_sweep(resolve_sweep_path("reward_weights")))
    configs = [trial_config(base, sweep, case, Path("/tmp/t"), "sqlite:///x.db", "r") for case in sweep.cases]
    assert {c.training.reward_type for c in configs} == {"step", "combined"}
    combined = [c.training for c in configs if c.training.reward_type == "combined"]
    ratios = {t.boxed_weight / (t.boxed_weight + t.correct_weight) for t in combined}  # format share of the reward
    assert len(ratios) == len(combined) >= 3
    assert len({reward_weights(c) for c in configs}) == len(configs)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (  # the weights do nothing under the step reward
            {"overrides": {"training.reward_type": "step"}, "space": {"training.boxed_weight": {"grid": [0.1, 0.5]}}},
            "training.boxed_weight is ignored unless training.reward_type is combined",
        ),
        (  # a range of an ignored knob: every draw is the same run
            {"space": {"training.target_kl": {"loguniform": [0.01, 0.1]}}},
            "training.target_kl is ignored unless training.early_stopping is true",
        ),
        (  # the guard's target does nothing while the rate is constant
            {"space": {"training.lr_control_target_kl": {"grid": [0.001, 0.01]}}},
            "training.lr_control_target_kl is ignored unless training.lr_control is kl_adaptive",
        ),
        (  # k2 and k3 differ only where a KL term is used
            {"space": {"training.kl_coef": {"choice": [0.0, 0.01]}, "training.kl_estimator": {"choice": ["k2", "k3"]}}},
            "training.kl_estimator is ignored unless training.kl_coef > 0",
        ),
        (  # rescaled combined weights under grpo
            {"space": {"training.boxed_weight": {"grid": [0.3, 0.6]}, "training.correct_weight": {"grid": [0.7, 1.4]}}},
            "the same reward up to scale",
        ),
        (  # a case that repeats a grid point
            {"cases": [{"training.reward_type": "correct"}, {"training.reward_type": "combined",
                        "training.boxed_weight": 0.0}]},
            "the same reward",
        ),
        ({"space": {"training.seed": {"grid": [1, "1"]}}}, "the same settings"),
    ],
)
def test_points_that_are_the_same_run_are_rejected_in_one_line(tmp_path: Path, fields: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validated(tmp_path, **fields)  # train_rlvr_test: grpo, combined reward
    assert "are the same run" in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_rescaled_weights_are_different_runs_where_the_algorithm_keeps_the_scale(tmp_path: Path) -> None:
    space = {"training.boxed_weight": {"grid": [0.3, 0.6]}, "training.correct_weight": {"grid": [0.7, 1.4]}}
    for algorithm in ("dr_grpo", "rloo", "ppo"):
        validated(tmp_path, overrides={"training.algorithm": algorithm}, space=space)
    validated(tmp_path, overrides={"training.reward_type": "step"}, space={"training.kl_coef": {"grid": [0.0, 0.1]}})


def test_cases_are_tune_grid_points_expanded_into_settings(tmp_path: Path) -> None:
    cases = [{"training.reward_type": "step"}, {"training.reward_type": "combined", "training.boxed_weight": "0.5"}]
    sweep = validated(tmp_path, cases=cases)
    assert sweep.cases[1]["training.boxed_weight"] == 0.5  # typed like the config
    assert sweep.swept_keys == ["training.reward_type", "training.boxed_weight", "training.learning_rate"]
    assert param_space(sweep)[CASE] == {"grid_search": [0, 1]}
    params = trial_params(sweep, {CASE: 1, "training.learning_rate": 1e-4})
    assert params == {"training.reward_type": "combined", "training.boxed_weight": 0.5, "training.learning_rate": 1e-4}
    cfg = trial_config(load_config("train_rlvr_test"), sweep, params, tmp_path / "t", "sqlite:///x.db", "r")
    assert (cfg.training.reward_type, cfg.training.boxed_weight) == ("combined", 0.5)


@pytest.mark.parametrize(
    ("cases", "expected"),
    [
        ([{}], "case 0 is empty"),
        ([{"training.reward_typ": "step"}], "did you mean training.reward_type"),
        ([{"training.learning_rate": 1e-3}], "set both in space and in cases"),
        ([{"training.reward_type": "exact"}], "sweep case 0"),
        ([{"output_dir": "x"}], "set by the sweep"),
    ],
)
def test_bad_cases_are_one_line(tmp_path: Path, cases: list, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validated(tmp_path, cases=cases)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_lr_kl_sweeps_learning_rate_and_kl() -> None:
    sweep = load_sweep(resolve_sweep_path("configs/sweeps/lr_kl.yaml"))
    assert sweep.space["training.learning_rate"].kind == "loguniform"
    assert "training.kl_coef" in sweep.space


def test_a_typo_in_a_space_key_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        validated(tmp_path, space={"training.learnin_rate": {"grid": [1e-4]}})
    assert str(err.value) == "training.learnin_rate: not a config field (did you mean training.learning_rate?)"


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"training.learning_rate": {"choice": [1e-4, -1.0]}}, "training.learning_rate=-1.0"),
        ({"training.reward_type": {"grid": ["combined", "exact"]}}, "allowed:"),
        ({"training.group_size": {"uniform": [2, 7]}}, "fractional"),  # 4.5 for an integer field
        ({"training.top_p": {"uniform": [0.5, 1.5]}}, "training.top_p=1.5"),
        ({"training.boxed_weight": {"loguniform": [1e-3, 1.0]}, "training.group_size": {"grid": [7]}}, "multiple"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, space: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validated(tmp_path, space=space)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_grid_combinations_are_checked_together(tmp_path: Path) -> None:
    # each value alone fits the base (batch 64, group 8), but batch 40 with group 16 does not
    space = {"training.batch_size": {"grid": [64, 40]}, "training.group_size": {"grid": [8, 16]}}
    with pytest.raises(ConfigError, match="grid combination"):
        validated(tmp_path, space=space, overrides={"training.mini_batch_size": 8})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"space": {"training.learning_rate": {"choice": [1], "grid": [2]}}}, "exactly one of"),
        ({"space": {"training.learning_rate": {"loguniform": [0, 1]}}}, "0 < low < high"),
        ({"space": {"output_dir": {"grid": ["a", "b"]}}}, "set by the sweep"),
        ({"mode": "maximise"}, "mode"),
        ({"scheduler": {"type": "hyperband"}}, "scheduler.type"),
        ({"trial_resources": {"gpus": 1}}, "trial_resources.gpus: unknown key"),
        ({"space": {}}, "space"),
    ],
)
def test_bad_sweep_fields_are_one_line(tmp_path: Path, fields: dict, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"space": {"training.learning_rate": {"choice": [1e-4]}}, **fields}))
    with pytest.raises(ConfigError) as err:
        validate_sweep(load_config("train_rlvr_test"), load_sweep(path))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_values_are_normalised_to_the_config_types(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("space:\n  training.learning_rate: {grid: [1e-4, '3e-4']}\n  training.seed: {choice: ['3']}\n")
    sweep = validate_sweep(load_config("train_rlvr_test"), load_sweep(path))
    assert sweep.space["training.learning_rate"].value == [1e-4, 3e-4]
    assert sweep.space["training.seed"].value == [3]
    assert sweep.name == "s"  # defaults to the file name


def test_the_cli_reports_a_bad_sweep_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    path = sweep_of(tmp_path, space={"training.kl_coeff": {"grid": [0.0, 0.1]}})
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_ray.tune", "--config-name", "train_rlvr_test", "--sweep", str(path),
         "--output-dir", str(tmp_path / "sweep")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: training.kl_coeff: not a config field (did you mean training.kl_coef?)"
    assert not (tmp_path / "sweep").exists()


def test_unknown_sweep_names_list_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="reward_weights"):
        resolve_sweep_path("no_such_sweep")


def test_tune_domains_come_from_a_plain_mapping() -> None:
    from ray.tune.search.sample import Categorical, Float

    assert tune_domain(Space(grid=[1, 2])) == {"grid_search": [1, 2]}
    assert isinstance(tune_domain(Space(choice=["a", "b"])), Categorical)
    uniform, log = tune_domain(Space(uniform=(0.1, 0.2))), tune_domain(Space(loguniform=(1e-5, 1e-3)))
    assert isinstance(uniform, Float) and isinstance(log, Float)
    assert (uniform.lower, uniform.upper, log.lower, log.upper) == (0.1, 0.2, 1e-5, 1e-3)


def test_trial_config_has_the_params_the_resources_and_absolute_paths(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")
    sweep = validated(
        tmp_path, overrides={"training.ppo_steps": 4},
        trial_resources={"rollout_cpus": 0.5, "learner_cpus": 0.25, "verifier_cpus": 0.1},
    )
    cfg = trial_config(base, sweep, {"training.learning_rate": 1e-3}, tmp_path / "t1", "sqlite:///x.db", "s-t1")
    assert cfg.training.learning_rate == 1e-3 and cfg.training.ppo_steps == 4
    assert (cfg.rollout.num_cpus, cfg.learner.num_cpus, cfg.verifier.num_cpus) == (0.5, 0.25, 0.1)
    assert cfg.output_dir == str(tmp_path / "t1") and Path(cfg.warm_start_dir).is_absolute()
    assert Path(cfg.warm_start_dir) == Path(base.warm_start_dir).resolve()  # shared by all trials
    assert (cfg.tracking.tracking_uri, cfg.tracking.run_name, cfg.resume) == ("sqlite:///x.db", "s-t1", True)


def test_trials_get_their_own_warm_start_when_the_space_changes_sft(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")
    sweep = validated(tmp_path, space={"sft.steps": {"grid": [20, 40]}})
    cfg = trial_config(base, sweep, {"sft.steps": 20}, tmp_path / "t1", "sqlite:///x.db", "r")
    assert cfg.warm_start_dir == str(tmp_path / "t1" / "warm_start")


def test_asha_max_t_counts_every_evaluation_and_the_final_report(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")  # 6 steps, eval every 3
    assert evals_per_run(base) == 2
    assert default_max_t(base, validated(tmp_path)) == 3
    longest = validated(tmp_path, space={"training.ppo_steps": {"choice": [4, 7]}})
    assert default_max_t(base, longest) == 4  # 7 steps: evals after 3, 6 and 7


def test_trial_bundles_hold_the_actors_a_trial_starts(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")
    sweep = validated(tmp_path, trial_resources={"trial_cpus": 0, "rollout_cpus": 0.5, "verifier_cpus": 0.1})
    cfg = trial_config(base, sweep, {}, tmp_path, "sqlite:///x.db", "r")
    assert trial_bundles(cfg, 0.0) == [{}, {"CPU": 0.5}, {"CPU": 0.1}, {"CPU": 0.1}]  # empty head: Tune allows it
    assert trial_bundles(cfg, 0.2)[0] == {"CPU": 0.2}
    large = load_config("train_rlvr_large")
    bundles = trial_bundles(large, 0.0)
    assert bundles[1] == {"CPU": 4.0, "GPU": 1.0, "rollout": 1.0} and bundles[-1] == {"CPU": 1.0, "verifier": 1.0}
    assert len(bundles) == 1 + 2 + 8


def test_local_ray_fits_the_concurrent_trials(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")
    sweep = validated(
        tmp_path, max_concurrent_trials=3,
        trial_resources={"trial_cpus": 0.1, "rollout_cpus": 1, "verifier_cpus": 0.5, "learner_cpus": 1},
    )
    cpus, custom = local_resources(base, sweep)
    assert cpus >= 3 * (1 + 2 * 0.5 + 1 + 0.1) + 1 and custom == {}


def test_statuses_and_error_lines() -> None:
    assert trial_status("TERMINATED", {"trial/completed": 1.0}) == "finished"
    assert trial_status("TERMINATED", {"eval/accuracy": 0.1}) == "stopped early"
    assert trial_status("ERROR", {}) == "failed"
    assert trial_status("RUNNING", {"eval/accuracy": 0.1}) == "interrupted"
    assert trial_status("PENDING", {}) == "pending"
    assert last_error_line("Traceback:\n  File x\nrlvr_ray.config.ConfigError: model.init_dir: bad\n") == (
        "rlvr_ray.config.ConfigError: model.init_dir: bad"
    )


def rows() -> list[TrialRow]:
    return [
        TrialRow("a_00000", {"training.learning_rate": 1e-4}, 0.25, "finished", 4),
        TrialRow("a_00001", {"training.learning_rate": 1e-2}, 0.05, "stopped early", 1),
        TrialRow("a_00002", {"training.learning_rate": 3e-4}, None, "failed", 0, "ConfigError: boom"),
        TrialRow("a_00003", {"training.learning_rate": 1e-3}, 0.5, "failed", 2, "RuntimeError: crashed late"),
    ]


def test_table_lists_every_trial_with_params_metric_and_status() -> None:
    table = format_table(rows(), "eval/accuracy", ["training.learning_rate"])
    lines = table.splitlines()
    assert lines[0].split() == ["trial", "training.learning_rate", "eval/accuracy", "evals", "status", "error"]
    assert lines[1].split() == ["a_00000", "0.0001", "0.2500", "4", "finished"]
    assert lines[2].endswith("stopped early")
    assert lines[3].split()[:3] == ["a_00002", "0.0003", "-"] and lines[3].endswith("ConfigError: boom")


def test_best_trial_ignores_failed_ones() -> None:
    assert best_row(rows(), "max").trial_id == "a_00000"  # type: ignore[union-attr]
    assert best_row(rows(), "min").trial_id == "a_00001"  # type: ignore[union-attr]
    assert best_row(rows()[2:3], "max") is None


def test_best_config_yaml_is_a_ready_to_run_config(tmp_path: Path) -> None:
    base = load_config("train_rlvr_test")
    sweep = validated(tmp_path, overrides={"training.ppo_steps": 4}, trial_resources={"rollout_cpus": 0.25})
    text = best_config_yaml(base, sweep, {"training.learning_rate": 1e-3}, ["Best trial x.", "  cp ..."])
    assert text.startswith("# Best trial x.\n#   cp ...\n")
    (tmp_path / "best.yaml").write_text(text)
    cfg = load_config("best", root=tmp_path)
    assert cfg.training.learning_rate == 1e-3 and cfg.training.ppo_steps == 4
    assert cfg.rollout.num_cpus == base.rollout.num_cpus  # a standalone run keeps the base's resources
    assert cfg.output_dir == f"{base.output_dir}_s_best" and cfg.warm_start_dir == base.warm_start_dir
