"""Config loading: every shipped file validates, overrides apply, bad input gives one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlvr_ray.config import (
    ConfigError,
    RunConfig,
    TrainingConfig,
    available_configs,
    config_dir,
    dump_config,
    load_config,
)

SEED_TRAINING_KNOBS = [
    "num_epochs",
    "samples_per_epoch",
    "max_prompt_length",
    "max_generation_length",
    "complexity_range",
    "ppo_steps",
    "learning_rate",
    "batch_size",
    "mini_batch_size",
    "gradient_accumulation_steps",
    "ppo_epochs",
    "cliprange",
    "cliprange_value",
    "vf_coef",
    "target_kl",
    "early_stopping",
    "temperature",
    "top_p",
    "reward_type",
    "boxed_weight",
    "correct_weight",
    "log_every",
    "checkpoint_every",
    "max_batches_per_epoch",
    "seed",
]


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_loads_and_starts_with_its_command(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    first = (config_dir() / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("#"), f"{name}.yaml must start with a comment"
    text = (config_dir() / f"{name}.yaml").read_text()
    assert "python -m rlvr_ray." in text


def test_seed_file_names_exist() -> None:
    root = config_dir()
    for rel in [
        "train_rlvr_model.yaml",
        "train_rlvr_test.yaml",
        "training/rlvr_small.yaml",
        "training/rlvr_large.yaml",
        "generative_process/rpn_arithmetic.yaml",
    ]:
        assert (root / rel).is_file(), rel


@pytest.mark.parametrize("group_file", ["training/rlvr_small.yaml", "training/rlvr_large.yaml"])
def test_training_files_keep_every_seed_knob(group_file: str) -> None:
    data = yaml.safe_load((config_dir() / group_file).read_text())
    missing = [k for k in SEED_TRAINING_KNOBS if k not in data]
    assert not missing, missing
    assert set(SEED_TRAINING_KNOBS) <= set(TrainingConfig.model_fields)


def test_seed_process_is_expressible() -> None:
    cfg = load_config(
        "train_rlvr_test", ["generative_process.operators=['+']", "generative_process.complexity_range=[1,2]"]
    )
    assert cfg.generative_process.operators == ["+"] and cfg.generative_process.complexity_range == (1, 2)


def test_overrides_are_typed() -> None:
    cfg = load_config(
        "train_rlvr_test", ["training.learning_rate=3e-4", "training.early_stopping=true", "rollout.engine=vllm"]
    )
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.training.early_stopping is True
    assert cfg.rollout.engine == "vllm"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.learning_rate=-1", "training.learning_rate: Input should be greater than 0"),
        ("training.lerning_rate=1", "training.lerning_rate: unknown key"),
        ("training.reward_type=fancy", "training.reward_type: allowed: 'boxed', 'correct', 'combined' or 'step'"),
        ("generative_process.operators=['/']", "generative_process.operators.0: allowed: '+', '-' or '*'"),
        ("generative_process.complexity_range=[3,1]", "generative_process.complexity_range"),
        ("training.batch_size=100", "batch_size 100 must be a multiple of group_size 8"),
        ("nonsense", "must look like section.field=value"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("train_rlvr_test", [override])
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_config_name_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"available: .*train_rlvr_test"):
        load_config("no_such_config")


def test_bad_yaml_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config("broken", root=tmp_path)
    assert "\n" not in str(err.value)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config("train_rlvr_model", ["training.kl_coef=0.01"])
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    assert load_config("again", root=tmp_path) == cfg


def test_total_steps_respects_caps() -> None:
    t = TrainingConfig(
        batch_size=64, group_size=8, mini_batch_size=32, samples_per_epoch=80, num_epochs=3, ppo_steps=None
    )
    assert t.prompts_per_step == 8 and t.total_steps == 30
    assert t.model_copy(update={"max_batches_per_epoch": 4}).total_steps == 12
    assert t.model_copy(update={"ppo_steps": 5}).total_steps == 5


def test_cli_bad_override_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_ray.main", "--config-name", "train_rlvr_test", "training.cliprange=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: training.cliprange: Input should be greater than 0 (got 0)"]
