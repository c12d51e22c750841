"""Pure helpers of bench/peer_trl.py: thresholds, ratio, table, train clock, eval schedule, project curve, TRL
settings, prompt text round trip through the saved tokenizer, and the reward function TRL calls. No TRL run."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from rlvr_ray.config import load_config
from rlvr_ray.task.rpn import generate_problems
from rlvr_ray.task.vocab import Vocab

_PATH = Path(__file__).resolve().parents[2] / "bench" / "peer_trl.py"
_SPEC = importlib.util.spec_from_file_location("peer_trl", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
peer = importlib.util.module_from_spec(_SPEC)
sys.modules["peer_trl"] = peer  # dataclasses resolve their module by name
_SPEC.loader.exec_module(peer)

V = Vocab(13, ("+", "-", "*"))


def curve(*points: tuple[float, float]) -> list:
    """Points with k1..k4 all at the given accuracy (so mean k1-4 equals it)."""
    return [peer.make_point(t, i, dict.fromkeys((1, 2, 3, 4), acc)) for i, (t, acc) in enumerate(points)]


# ---------------------------------------------------------------------------------------------------------------
# thresholds, ratio, table


def test_mean_k1_4_ignores_other_complexities_and_needs_one_of_them() -> None:
    assert peer.mean_k1_4({1: 1.0, 2: 0.5, 3: 0.5, 4: 0.0, 5: 0.0, 6: 0.0}) == pytest.approx(0.5)
    assert peer.mean_k1_4({1: 0.8, 2: 0.6}) == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"k=.*evaluated: \[5, 6\]"):
        peer.mean_k1_4({5: 1.0, 6: 1.0})


def test_time_to_threshold_is_the_first_eval_at_or_above() -> None:
    c = curve((0, 0.5), (60, 0.69), (120, 0.7), (180, 0.65), (240, 0.82))
    assert peer.time_to_threshold(c, 0.7) == 120  # exactly at the threshold counts
    assert peer.time_to_threshold(c, 0.8) == 240
    assert peer.time_to_threshold(c, 0.85) is None
    assert peer.time_to_threshold(list(reversed(c)), 0.7) == 120  # order of the list does not matter


def test_ratio_cell_gives_bounds_when_one_side_never_got_there() -> None:
    assert peer.ratio_cell(300.0, 100.0, 900.0) == "3.00"
    assert peer.ratio_cell(None, 100.0, 900.0) == ">9.00"  # TRL would need more than the whole budget
    assert peer.ratio_cell(450.0, None, 900.0) == "<0.50"
    assert peer.ratio_cell(None, None, 900.0) == "n/a"


def test_table_lists_each_threshold_with_times_and_ratio() -> None:
    trl = curve((0, 0.5), (300, 0.72), (600, 0.81))
    project = curve((0, 0.5), (100, 0.75), (200, 0.86))
    rows = peer.threshold_rows(trl, project, 900.0)
    assert [(r["trl_s"], r["project_s"], r["ratio"]) for r in rows] == [
        (300.0, 100.0, "3.00"),
        (600.0, 200.0, "3.00"),
        (None, 200.0, ">4.50"),
    ]
    lines = peer.format_table(rows, 900.0).splitlines()
    assert len(lines) == 2 + len(peer.THRESHOLDS)
    assert lines[2] == "| >= 0.70 | 300 | 100 | 3.00 |"
    assert lines[4] == "| >= 0.85 | not reached in 900 | 200 | >4.50 |"


# ---------------------------------------------------------------------------------------------------------------
# train clock and interval schedule


class FakeNow:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_train_clock_excludes_paused_time() -> None:
    now = FakeNow()
    clock = peer.TrainClock(now)
    assert clock.elapsed() == 0.0
    clock.start()
    now.t += 10
    with clock.paused():
        now.t += 50
        assert clock.elapsed() == 10  # frozen while paused
    now.t += 5
    assert clock.elapsed() == 15


def test_next_due_skips_missed_slots() -> None:
    assert peer.next_due(0.0, 60) == 60
    assert peer.next_due(59.9, 60) == 60
    assert peer.next_due(60.0, 60) == 120
    assert peer.next_due(185.0, 60) == 240


def test_schedule_evaluates_at_zero_every_interval_and_at_the_budget_with_eval_time_excluded() -> None:
    now = FakeNow()
    evals: list[float] = []

    def evaluate(model: object) -> dict[int, float]:
        now.t += 7.0  # each evaluation takes 7 s of wall time
        evals.append(now.t)
        return {1: 0.5, 2: 0.5}

    schedule = peer.IntervalSchedule(peer.TrainClock(now), evaluate, every_s=10, budget_s=35)
    schedule.begin(model=None)
    stops = []
    for step in range(1, 100):
        now.t += 4.0  # a training step
        stops.append(schedule.after_step(None, step))
        if stops[-1]:
            break
    assert [p.train_s for p in schedule.curve] == [0, 12, 20, 32, 36]  # eval time never counted as train time
    assert [p.step for p in schedule.curve] == [0, 3, 5, 8, 9]
    assert stops.count(True) == 1 and len(stops) == 9
    assert [p.eval_s for p in schedule.curve] == [7.0] * 5


# ---------------------------------------------------------------------------------------------------------------
# the project's curve from MLflow histories


def test_project_curve_uses_time_train_s_and_places_before_and_after() -> None:
    histories = {
        "eval/accuracy_k1": {4: 0.9, 9: 1.0},
        "eval/accuracy_k2": {4: 0.5, 9: 0.7},
        "time/train_s": {s: 3.0 * (s + 1) for s in range(11)},
        "perf/step_s": dict.fromkeys(range(11), 100.0),  # ignored: time/train_s wins
    }
    c, source = peer.project_curve(histories, [1, 2], before={1: 0.8, 2: 0.2}, after={1: 1.0, 2: 0.8})
    assert source == "time/train_s"
    assert [(p.train_s, p.step) for p in c] == [(0.0, 0), (15.0, 5), (30.0, 10), (33.0, 11)]
    assert [p.mean_k1_4 for p in c] == pytest.approx([0.5, 0.7, 0.85, 0.9])


def test_project_curve_falls_back_to_cumulative_step_seconds_and_dedupes_the_final_eval() -> None:
    histories = {
        "eval/accuracy_k1": {1: 0.6, 3: 0.8},
        "time/train_s": {},
        "perf/step_s": {0: 1.0, 1: 2.0, 2: 1.5, 3: 0.5},
    }
    c, source = peer.project_curve(histories, [1], before=None, after={1: 0.8})
    assert source.startswith("cumulative perf/step_s")
    assert [(p.train_s, p.step) for p in c] == [(3.0, 2), (5.0, 4)]  # the last step was an eval step: no duplicate


def test_project_curve_without_a_time_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="no time axis"):
        peer.project_curve({"eval/accuracy_k1": {0: 1.0}}, [1])


def test_project_command_stops_on_time_not_steps() -> None:
    cmd = peer.project_command("cfg", ["training.learning_rate=1e-4"], Path("/w"), Path("/o"), "sqlite:///x", 60, 5, 3)
    assert cmd[1:5] == ["-m", "rlvr_ray.main", "--config-name", "cfg"]
    for part in ("training.learning_rate=1e-4", "model.init_dir=/w", "output_dir=/o", "training.time_budget_s=60",
                 "training.eval_every=5", "resume=false", "tracking.tracking_uri=sqlite:///x",
                 "training.checkpoint_every=5"):  # fmt: skip
        assert part in cmd
    assert "training.checkpoint_every=50" in peer.project_command("c", [], Path("/w"), Path("/o"), "u", 60, 5, 50)
    assert load_config("train_rlvr_test", cmd[5:]).training.total_steps >= 1_000_000


# ---------------------------------------------------------------------------------------------------------------
# TRL settings


def test_trl_settings_mirror_the_default_config() -> None:
    t = load_config("train_rlvr_model").training
    s = peer.trl_settings(t)
    assert (s.prompts_per_step, s.group_size, s.batch_size) == (t.prompts_per_step, t.group_size, t.batch_size)
    assert (s.mini_batch_size, s.learning_rate, s.max_new_tokens) == (
        t.mini_batch_size,
        t.learning_rate,
        t.max_generation_length,
    )
    assert (s.reward_type, s.temperature, s.beta, s.seed) == (t.reward_type, t.temperature, t.kl_coef, t.seed)


@pytest.mark.parametrize(
    ("algorithm", "loss_type", "scale", "eps_high"),
    [("grpo", "grpo", "group", None), ("dr_grpo", "dr_grpo", "none", None), ("dapo", "dapo", "group", 0.28)],
)
def test_trl_settings_map_each_algorithm(algorithm: str, loss_type: str, scale: str, eps_high: float | None) -> None:
    s = peer.trl_settings(load_config("train_rlvr_test", [f"training.algorithm={algorithm}"]).training)
    assert (s.loss_type, s.scale_rewards, s.epsilon_high) == (loss_type, scale, eps_high)


@pytest.mark.parametrize("override", ["training.algorithm=ppo", "training.algorithm=rloo"])
def test_trl_settings_refuse_algorithms_trl_lacks(override: str) -> None:
    with pytest.raises(ValueError, match="allowed: grpo, dr_grpo, dapo"):
        peer.trl_settings(load_config("train_rlvr_test", [override]).training)


def test_apply_overrides_parses_values_and_names_bad_keys() -> None:
    s = peer.trl_settings(load_config("train_rlvr_test").training)
    changed = peer.apply_overrides(s, ["learning_rate=5e-5", "loss_type=dapo"])
    assert (changed.learning_rate, changed.loss_type, changed.group_size) == (5e-5, "dapo", s.group_size)
    assert peer.apply_overrides(s, {"beta": 0.01}).beta == 0.01
    with pytest.raises(ValueError, match=r"'lr' unknown; allowed: .*learning_rate"):
        peer.apply_overrides(s, ["lr=1"])
    assert peer.apply_overrides(s, ["epsilon_high=null", "group_size=4"]).epsilon_high is None
    assert peer.apply_overrides(s, ["group_size=4"]).group_size == 4
    with pytest.raises(ValueError, match="group_size='many': expected int"):
        peer.apply_overrides(s, ["group_size=many"])
    with pytest.raises(ValueError, match="name=value"):
        peer.apply_overrides(s, ["learning_rate"])


# ---------------------------------------------------------------------------------------------------------------
# prompts and reward, as TRL sees them


def test_prompt_text_round_trips_through_the_saved_tokenizer(tmp_path: Path) -> None:
    from rlvr_ray.policy import build_tokenizer

    build_tokenizer(V).save_pretrained(tmp_path)
    tokenizer = peer.load_tokenizer(tmp_path)
    prompts = generate_problems(V, 64, (1, 4), seed=3).prompt_lists()
    texts = [peer.prompt_text(p, V) for p in prompts]
    assert tokenizer(text=texts)["input_ids"] == prompts  # what GRPOTrainer does with plain-text prompts
    assert [V.encode(t) for t in texts] == prompts  # what the reward function does
    assert tokenizer.pad_token_id == V.pad and tokenizer.eos_token_id == V.eoe


def test_prompt_rows_are_the_project_prompt_stream_in_order() -> None:
    from rlvr_ray.task.prompts import PromptSampler

    t = load_config("train_rlvr_test").training
    rows = peer.prompt_rows(V, t, 4, steps=3)
    sampler = PromptSampler(V, t.complexity_range, 4, t.seed, t.max_prompt_length)
    expected = []
    for step in range(3):
        batch = sampler.sample(step)
        expected += [(ids, int(a)) for ids, a in zip(batch.prompt_ids, batch.answers, strict=True)]
    assert [(V.encode(r["prompt"]), r["answer"]) for r in rows] == expected


@pytest.mark.parametrize("reward_type", ["step", "correct", "combined"])
def test_reward_fn_scores_completion_ids_like_the_project(reward_type: str) -> None:
    from rlvr_ray.verify.rewards import score_batch

    settings = peer.apply_overrides(
        peer.trl_settings(load_config("train_rlvr_test").training), {"reward_type": reward_type}
    )
    problems = generate_problems(V, 16, (2, 4), seed=11)
    prompts, targets = problems.prompt_lists(), problems.completion_lists()
    completions = [*targets[:8], *[[*c[:-3], V.eoe] for c in targets[8:]]]  # half right, half cut short
    reward = peer.make_reward_fn(V, settings)
    got = reward(
        prompts=[peer.prompt_text(p, V) for p in prompts],
        completions=[V.decode(c) for c in completions],
        completion_ids=completions,
        answer=problems.answers.tolist(),
        complexity=problems.complexities.tolist(),
        trainer_state=None,
    )
    want = score_batch(prompts, completions, problems.answers.tolist(), V, reward_type, 0.3, 0.7).reward
    assert got == pytest.approx(want.tolist())
    assert got[:8] == [1.0] * 8 and max(got[8:]) < 1.0


def test_every_trl_setting_has_a_converter() -> None:
    import dataclasses

    assert {str(f.type) for f in dataclasses.fields(peer.TrlSettings)} <= set(peer._CONVERT)


# ---------------------------------------------------------------------------------------------------------------
# reading a real MLflow run, and the report files


def test_read_histories_from_a_real_sqlite_mlflow_run(tmp_path: Path) -> None:
    from rlvr_ray.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(uri, "peer-test", "run")
    for step in range(6):
        metrics = {"time/train_s": 2.0 * (step + 1), "perf/step_s": 1.5}
        if step % 3 == 2:
            metrics.update({"eval/accuracy_k1": 0.5 + 0.1 * step, "eval/accuracy_k2": 0.2})
        tracker.log_metrics(metrics, step)
    keys = ["eval/accuracy_k1", "eval/accuracy_k2", "time/train_s", "perf/step_s"]
    histories = peer.read_histories(uri, tracker.run_id, keys)
    assert histories["eval/accuracy_k1"] == pytest.approx({2: 0.7, 5: 1.0})
    c, source = peer.project_curve(histories, [1, 2])
    assert source == "time/train_s"
    assert [(p.train_s, p.step, p.accuracy) for p in c] == [(6.0, 3, {1: 0.7, 2: 0.2}), (12.0, 6, {1: 1.0, 2: 0.2})]


def test_write_report_writes_json_png_and_table(tmp_path: Path) -> None:
    import json

    args = peer.parse_args(["--warm-start", "w", "--budget-s", "900", "--out", str(tmp_path)])
    trl = peer.SideResult("trl", curve((0, 0.5), (300, 0.72)), 40, 900.0, 950.0, {"learning_rate": 1e-4})
    project = peer.SideResult("project", curve((0, 0.5), (100, 0.81)), 80, 880.0, 1000.0)
    table = peer.write_report(tmp_path, args, trl, project, {})
    report = json.loads((tmp_path / "peer_trl.json").read_text())
    assert [p["train_s"] for p in report["trl"]["curve"]] == [0, 300]
    assert report["project"]["curve"][1]["accuracy"] == {"1": 0.81, "2": 0.81, "3": 0.81, "4": 0.81}
    assert [r["ratio"] for r in report["time_to_threshold"]] == ["3.00", ">9.00", "n/a"]
    assert report["machine"]["cpus"] == os.cpu_count()
    assert (tmp_path / "peer_trl_table.md").read_text() == table + "\n"
    assert (tmp_path / "peer_trl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_rows_reads_both_eval_table_formats(tmp_path: Path) -> None:
    import json

    rows = [{"complexity": 1, "n": 4, "accuracy": 0.75}, {"complexity": 2, "n": 4, "accuracy": 0.25}]
    (tmp_path / "after.json").write_text(json.dumps(rows))
    (tmp_path / "before.json").write_text(json.dumps({"key": {"eval": {}}, "rows": rows}))
    assert peer.load_rows(tmp_path / "after.json") == peer.load_rows(tmp_path / "before.json") == {1: 0.75, 2: 0.25}
    assert peer.load_rows(tmp_path / "missing.json") is None
