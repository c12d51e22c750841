"""Pure helpers of bench/warm_starts.py: warm-start specs, mean k1-4 change and its standard error, the verdict,
the SFT and RL commands, what a warm start's warm_start.json says about its SFT, and the table. No SFT or RL run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from rlvr_ray.config import load_config
from rlvr_ray.sft import warm_start_key

_PATH = Path(__file__).resolve().parents[2] / "bench" / "warm_starts.py"
_SPEC = importlib.util.spec_from_file_location("warm_starts", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
ws = importlib.util.module_from_spec(_SPEC)
sys.modules["warm_starts"] = ws  # dataclasses resolve their module by name
_SPEC.loader.exec_module(ws)


def table(*accs: float, n: int = 200) -> dict[int, dict[str, float]]:
    """Accuracy per complexity 1, 2, ... with ``n`` problems each."""
    return {k: {"accuracy": a, "n": n} for k, a in enumerate(accs, start=1)}


# ---------------------------------------------------------------------------------------------------------------
# specs


def test_parse_warm_and_sft_specs() -> None:
    spec = ws.parse_warm("late=/tmp/x/warm")
    assert (spec.label, spec.path, spec.sft) == ("late", Path("/tmp/x/warm"), None)
    spec = ws.parse_sft("prompt_loss=sft.steps=700  sft.loss_on_prompt=true")
    assert (spec.label, spec.path) == ("prompt_loss", None)
    assert spec.sft == ["sft.steps=700", "sft.loss_on_prompt=true"]  # the first '=' ends the label only


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        ("parse_warm", "late", "expected LABEL=DIR"),
        ("parse_warm", "=dir", "expected LABEL=DIR"),
        ("parse_sft", "early=", "expected 'LABEL=sft.KEY=VALUE"),
        ("parse_sft", "early=training.learning_rate=1e-4", "is not an SFT override"),
        ("parse_sft", "early=sft.steps", "is not an SFT override"),
        ("parse_warm", "a/b=dir", "allowed characters"),
    ],
)
def test_bad_specs_give_one_clear_line(parse: str, text: str, message: str) -> None:
    parser = {"parse_warm": ws.parse_warm, "parse_sft": ws.parse_sft}[parse]
    with pytest.raises(ValueError, match=message) as err:
        parser(text)
    assert "\n" not in str(err.value)


def test_command_line_keeps_the_order_of_warm_starts_and_rejects_duplicates(capsys: pytest.CaptureFixture) -> None:
    args = ws.parse_args(["--sft", "early=sft.steps=150", "--warm", "late=/w", "--sft", "mid=sft.steps=300"])
    assert [s.label for s in args.specs] == ["early", "late", "mid"]
    assert (args.steps, args.budget_s) == (100, None)
    with pytest.raises(SystemExit):
        ws.parse_args(["--warm", "a=/w", "--sft", "a=sft.steps=1"])
    assert "labels must differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ws.parse_args(["--sft", "a=steps=1"])
    assert "is not an SFT override" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ws.parse_args(["--warm", "a=/w", "--steps", "5", "--budget-s", "60"])


# ---------------------------------------------------------------------------------------------------------------
# change, standard error, verdict


def test_change_is_the_mean_over_k1_4_only_with_the_binomial_se() -> None:
    before = table(0.9, 0.7, 0.5, 0.1, 0.05, 0.0)  # k5, k6 are not part of mean k1-4
    after = table(1.0, 0.8, 0.6, 0.2, 0.9, 0.9)
    c = ws.change(before, after)
    assert c["ks"] == [1, 2, 3, 4]
    assert c["mean_before"] == pytest.approx(0.55)
    assert c["mean_after"] == pytest.approx(0.65)
    assert c["delta"] == pytest.approx(0.10)
    variances = [p * (1 - p) / 200 for p in (0.9, 0.7, 0.5, 0.1, 1.0, 0.8, 0.6, 0.2)]
    assert c["se"] == pytest.approx(math.sqrt(sum(variances)) / 4)
    assert c["fell"] is False
    assert c["verdict"] == "rose"  # 0.10 is over 2 SE (~0.034)


def test_change_uses_each_complexitys_own_n() -> None:
    before, after = table(0.5, 0.5), table(0.5, 0.5)
    before[1]["n"] = after[1]["n"] = 100  # k=1 has only ~107 held-out prompts
    c = ws.change(before, after)
    assert c["se"] == pytest.approx(math.sqrt(2 * 0.25 / 100 + 2 * 0.25 / 200) / 2)


def test_a_small_fall_is_a_fall_but_within_noise() -> None:
    c = ws.change(table(0.6, 0.6, 0.6, 0.6), table(0.59, 0.59, 0.59, 0.59))
    assert c["fell"] is True
    assert c["verdict"] == "within noise (fell)"
    c = ws.change(table(0.51, 0.51, 0.51, 0.51), table(0.41, 0.41, 0.41, 0.41))  # issue 10's measured fall
    assert c["verdict"] == "fell"


def test_verdict_at_the_edges() -> None:
    assert ws.verdict(0.0, 0.0) == "within noise (unchanged)"
    assert ws.verdict(0.01, 0.0) == "rose"  # no sampling error at all (accuracies 0 or 1): any change is real
    assert ws.verdict(0.02, 0.01) == "within noise (rose)"  # exactly 2 SE is not more than 2 SE
    assert ws.verdict(-0.021, 0.01) == "fell"


def test_change_refuses_tables_over_different_complexities() -> None:
    with pytest.raises(ValueError, match="need the same ones of k1-4"):
        ws.change(table(0.5, 0.5), table(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="need the same ones of k1-4"):
        ws.change({5: {"accuracy": 0.1, "n": 9}}, {5: {"accuracy": 0.2, "n": 9}})


def test_accuracies_reads_the_projects_eval_rows() -> None:
    rows = [{"complexity": 1, "n": 107, "accuracy": 0.93, "boxed": 1.0, "chain_exact": 0.9, "space": 507},
            {"complexity": 2, "n": 200, "accuracy": 0.74, "boxed": 1.0, "chain_exact": 0.7}]  # fmt: skip
    assert ws.accuracies(rows) == {1: {"accuracy": 0.93, "n": 107}, 2: {"accuracy": 0.74, "n": 200}}


# ---------------------------------------------------------------------------------------------------------------
# commands


def test_rl_command_keeps_the_config_and_sets_only_the_run_plumbing() -> None:
    cmd = ws.rl_command("train_rlvr_model", ["eval.n=50"], Path("/w"), Path("/o"), "sqlite:///x.db", 100, None, 50)
    assert cmd[1:5] == ["-m", "rlvr_ray.main", "--config-name", "train_rlvr_model"]
    assert cmd[5] == "eval.n=50"
    assert {"model.init_dir=/w", "output_dir=/o", "resume=false", "tracking.tracking_uri=sqlite:///x.db",
            "training.ppo_steps=100", "training.eval_every=50",
            "training.checkpoint_every=100"} <= set(cmd)  # fmt: skip
    touched = {arg.split("=")[0] for arg in cmd[5:]}
    assert not {"training.learning_rate", "training.algorithm", "training.reward_type",
                "training.max_staleness"} & touched  # fmt: skip
    # the command is a valid config that runs exactly the asked number of steps
    cfg = load_config("train_rlvr_model", [a for a in cmd[5:] if not a.startswith("tracking.")])
    assert cfg.training.total_steps == 100


def test_rl_command_with_a_time_budget_and_argument_checks() -> None:
    cmd = ws.rl_command("train_rlvr_model", [], Path("/w"), Path("/o"), "sqlite:///x.db", None, 300.0, 50)
    assert "training.time_budget_s=300.0" in cmd
    assert not any(a.startswith("training.ppo_steps=") and a != "training.ppo_steps=1000000" for a in cmd)
    with pytest.raises(ValueError, match="exactly one of steps and budget_s"):
        ws.rl_command("c", [], Path("/w"), Path("/o"), "u", 10, 60.0, 5)
    with pytest.raises(ValueError, match="exactly one of steps and budget_s"):
        ws.rl_command("c", [], Path("/w"), Path("/o"), "u", None, None, 5)


def test_sft_command_and_what_a_built_warm_start_says_about_its_sft(tmp_path: Path) -> None:
    overrides = ["sft.steps=700", "sft.target_accuracy=null", "sft.loss_on_prompt=true"]
    cmd = ws.sft_command("train_rlvr_model", tmp_path, overrides)
    assert cmd[1:] == ["-m", "rlvr_ray.sft", "--config-name", "train_rlvr_model", "--out", str(tmp_path), *overrides]
    (tmp_path / "warm_start.json").write_text(json.dumps(warm_start_key(load_config("train_rlvr_model", overrides))[1]))
    info = ws.describe_sft(tmp_path, {"seconds": 1.0})
    assert (info["steps_run"], info["loss_on_prompt"], info["seconds"]) == (700, True, 1.0)
    # with the probe target, SFT may stop before its budget: the steps are only a bound
    probe = load_config("train_rlvr_model", ["sft.target_accuracy=0.5"])
    (tmp_path / "warm_start.json").write_text(json.dumps(warm_start_key(probe)[1]))
    assert ws.describe_sft(tmp_path, {})["steps_run"] == "<=1000 (probe target)"
    (tmp_path / "warm_start.json").unlink()
    assert "SFT settings unknown" in ws.describe_sft(tmp_path, {})["note"]


def test_format_table_has_one_row_per_warm_start() -> None:
    result = {
        "label": "early", "sft": {"steps_run": 150, "loss_on_prompt": False},
        "before": {str(k): v for k, v in table(0.2, 0.1, 0.1, 0.0).items()},
        "after": {str(k): v for k, v in table(0.3, 0.1, 0.1, 0.0).items()},
        "change": ws.change(table(0.2, 0.1, 0.1, 0.0), table(0.3, 0.1, 0.1, 0.0)),
        "rl_steps": 100, "train_s": 123.4, "load_before": [2.5, 2, 2], "load_after": [3.0, 2, 2],
    }  # fmt: skip
    lines = ws.format_table([result, {**result, "label": "late"}]).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| early | 150 | False | 0.100 -> 0.125 | +0.025 +- ")
    assert "| 0.200 / 0.100 / 0.100 / 0.000 | 0.300 / 0.100 / 0.100 / 0.000 | 100 | 123 | 2.5 / 3.0 |" in lines[2]
    assert lines[3].startswith("| late |")


def test_append_keeps_other_warm_starts_only_when_measured_with_the_same_settings() -> None:
    now = {"config_name": "train_rlvr_model", "overrides": [], "steps": 150, "budget_s": None, "eval_every": 25}
    report = {**now, "results": [{"label": "early"}, {"label": "mid"}, {"label": "late"}]}
    assert ws.kept_results(report, now, ["mid", "jump"]) == [{"label": "early"}, {"label": "late"}]
    with pytest.raises(ValueError, match=r"measured with \{'steps': 100\}, this run with \{'steps': 150\}"):
        ws.kept_results({**report, "steps": 100}, now, ["jump"])


def test_paired_change_counts_gains_and_losses_and_its_se_comes_from_per_prompt_differences() -> None:
    before = {1: [1.0, 1.0, 0.0, 0.0], 2: [0.0, 0.0, 0.0, 0.0]}
    after = {1: [1.0, 0.0, 1.0, 1.0], 2: [0.0, 0.0, 0.0, 1.0]}  # k1: +2 -1, k2: +1
    c = ws.paired_change(before, after)
    assert c["delta"] == pytest.approx((0.25 + 0.25) / 2)
    assert (c["gained"], c["lost"]) == ({1: 2, 2: 1}, {1: 1, 2: 0})
    var1 = sum((d - 0.25) ** 2 for d in (0, -1, 1, 1)) / 3 / 4  # sample variance of the differences / n
    var2 = sum((d - 0.25) ** 2 for d in (0, 0, 0, 1)) / 3 / 4
    assert c["se_paired"] == pytest.approx(math.sqrt(var1 + var2) / 2)
    # the same accuracies with every prompt unchanged but one have a far smaller paired SE than the unpaired one
    same = {1: [1.0] * 100 + [0.0] * 100}
    one_more = {1: [1.0] * 101 + [0.0] * 99}
    paired = ws.paired_change(same, one_more)
    unpaired = ws.change(table(0.5, n=200), table(0.505, n=200))
    assert paired["delta"] == pytest.approx(unpaired["delta"])
    assert paired["se_paired"] < unpaired["se"] / 5


def test_paired_change_refuses_different_prompt_sets() -> None:
    with pytest.raises(ValueError, match="same prompts"):
        ws.paired_change({1: [1.0, 0.0]}, {1: [1.0]})
    with pytest.raises(ValueError, match="same prompts"):
        ws.paired_change({1: [1.0]}, {2: [1.0]})
