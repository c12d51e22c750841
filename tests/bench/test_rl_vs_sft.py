"""Pure helpers and argument checks of bench/rl_vs_sft.py: the SFT side's learning rate, the curve table, bad
input. No SFT or RL run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rlvr_ray.config import load_config
from rlvr_ray.sft import lr_at

_PATH = Path(__file__).resolve().parents[2] / "bench" / "rl_vs_sft.py"
_SPEC = importlib.util.spec_from_file_location("rl_vs_sft", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
rvs = importlib.util.module_from_spec(_SPEC)
sys.modules["rl_vs_sft"] = rvs
_SPEC.loader.exec_module(rvs)
peer = rvs.peer


def test_the_sft_side_continues_at_the_rate_the_schedule_had_reached() -> None:
    cfg = load_config("train_rlvr_model")
    assert rvs.default_sft_lr(cfg, 700) == lr_at(700, 1000, cfg.sft.warmup_steps, cfg.sft.learning_rate)
    assert rvs.default_sft_lr(cfg, 700) == pytest.approx(9.116e-4, rel=1e-3)  # the default warm start's step
    assert rvs.default_sft_lr(cfg, 5000) == lr_at(999, 1000, cfg.sft.warmup_steps, cfg.sft.learning_rate)


def test_curve_table_has_a_row_per_eval_and_the_k5_6_mean() -> None:
    points = [peer.make_point(0, 0, {1: 0.5, 2: 0.25, 5: 0.1, 6: 0.2}),
              peer.make_point(100, 418, {1: 1.0, 2: 0.75, 5: 0.0, 6: 0.1})]  # fmt: skip
    sft = peer.SideResult("sft", points, 418, 100.0, 110.0)
    rl = peer.SideResult("rl", [peer.make_point(50, 60, {1: 0.625, 2: 0.5})], 60, 50.0, 70.0)
    lines = rvs.curve_table([sft, rl], [1, 2, 5, 6]).splitlines()
    assert lines[0] == "| side | train s | step | k1 | k2 | k5 | k6 | mean k1-4 | mean k5-6 |"
    assert lines[3] == "| sft | 100 | 418 | 1.000 | 0.750 | 0.000 | 0.100 | 0.875 | 0.050 |"
    assert lines[4] == "| rl | 50 | 60 | 0.625 | 0.500 | nan | nan | 0.562 | - |"  # not evaluated: nan / -
    assert len(lines) == 5


def test_bad_input_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rvs.parse_args(["--warm-start", str(tmp_path), "--sides", "sft,ppo"])
    assert exit_info.value.code == 2 and "allowed: sft, rl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rvs.parse_args(["--sides", "sft"])  # no warm start
    assert "--warm-start is required" in capsys.readouterr().err
    code = rvs.main(["--warm-start", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not a policy directory (no config.json)" in err
