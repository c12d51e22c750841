"""End to end on a real local Ray: tiny sweeps of full actor-learner runs under Tune, with MLflow parent/child runs.

Each trial starts its own rollout actor, verifier and Ray Train learner, so a trial costs about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlvr_ray.config import load_config

pytestmark = pytest.mark.slow

# Short trials that evaluate after every step, on one tiny verifier, with fractional CPUs so two trials share 2 cores.
TINY = {
    "training.ppo_steps": 4, "training.eval_every": 1, "training.checkpoint_every": 2, "verifier.num_actors": 1,
    "eval.complexities": [1], "eval.n": 16,
}
RESOURCES = {"trial_cpus": 0, "rollout_cpus": 0.5, "verifier_cpus": 0.1, "learner_cpus": 0.5}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def write_sweep(path: Path, **fields: Any) -> Path:
    path.write_text("# test sweep\n" + yaml.safe_dump(fields, sort_keys=False))
    return path


def mlflow_runs(sweep_dir: Path) -> tuple[Any, list[Any]]:
    """The sweep's parent run and its child runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    parent_id = (sweep_dir / "mlflow_run_id").read_text().strip()
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    return parent, children


def wait_for_free_cpus(timeout_s: float = 60) -> None:
    """Every actor and placement group of every trial is released once the sweep is over."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] - 1e-6:
        assert time.monotonic() < deadline, f"resources still held: {ray.available_resources()}"
        time.sleep(1)


def test_asha_sweep_stops_a_bad_trial_early_and_reports_every_trial(
    tmp_path: Path, warm_start: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from rlvr_ray import tune

    # lr 0.5 wrecks the policy on its first update (held-out format rate 1 -> 0); lr 1e-8 leaves it as it is.
    # Grid order (first key fastest): (s1, 1e-8), (s2, 1e-8), (s1, 0.5), (s2, 0.5), two at a time. The lr 0.5 trials
    # start once a good trial has finished, so the first ASHA rung holds 1.0 and stops them at their first report.
    sweep = write_sweep(
        tmp_path / "tiny.yaml", name="tiny", metric="eval/boxed_k1", mode="max", max_concurrent_trials=2,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}, trial_resources=RESOURCES,
        overrides=TINY, space={"training.seed": {"grid": [1, 2]}, "training.learning_rate": {"grid": [1.0e-8, 0.5]}},
    )
    sweep_dir = tmp_path / "sweep"
    started = time.monotonic()
    try:
        rc = tune.main(["--config-name", "train_rlvr_test", "--sweep", str(sweep), "--output-dir", str(sweep_dir),
                        f"warm_start_dir={warm_start}"])
        wait_for_free_cpus()
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    print(f"tiny ASHA sweep: {time.monotonic() - started:.0f} s\n{(sweep_dir / 'summary.txt').read_text()}")
    assert rc == 0, out[-3000:]

    table = (sweep_dir / "summary.txt").read_text().splitlines()
    assert table[0].split() == ["trial", "training.seed", "training.learning_rate", "eval/boxed_k1", "evals", "status",
                                "error"]
    rows = [line.split() for line in table[1:]]
    assert len(rows) == 4 and all(line in out for line in table)
    good, bad = [r for r in rows if r[2] == "1e-08"], [r for r in rows if r[2] == "0.5"]
    assert len(good) == 2 and all(r[3:] == ["1.0000", "4", "finished"] for r in good), table
    # ASHA compares a trial with what already reached its rung: a bad trial that reports first cannot be cut, so
    # which bad trials stop depends on timing; at least one must, after 1 of its 4 evaluations.
    assert len(bad) == 2 and all(r[3] == "0.0000" for r in bad), table
    stopped = [r for r in bad if r[4:] == ["1", "stopped", "early"]]
    # a bad trial that was not cut at its first report may be cut at a later rung (2 or 4 reports), or finish
    rungs = (["1", "stopped", "early"], ["2", "stopped", "early"], ["4", "stopped", "early"], ["4", "finished"])
    assert stopped and all(r[4:] in rungs for r in bad), table

    best = json.loads((sweep_dir / "best.json").read_text())
    assert best["params"]["training.learning_rate"] == 1e-8 and best["value"] == 1.0
    assert Path(best["policy_dir"]).name == "final_policy" and (Path(best["policy_dir"]) / "config.json").is_file()
    assert f"best policy: {best['policy_dir']}" in out
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "best.yaml").write_text((sweep_dir / "best_config.yaml").read_text())
    cfg = load_config("best", root=configs)
    assert cfg.training.learning_rate == 1e-8 and cfg.training.ppo_steps == 4 and cfg.training.seed in (1, 2)

    parent, children = mlflow_runs(sweep_dir)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.best_trial"] == best["trial"]
    assert len(children) == 4
    statuses = {c.data.tags["sweep.trial_id"]: (c.data.tags["sweep.status"], c.info.status) for c in children}
    assert sorted(statuses.values()).count(("finished", "FINISHED")) == 4 - len(stopped)
    assert all(statuses[r[0]] == ("stopped early", "KILLED") for r in stopped)
    assert all(len(c.data.metrics) > 10 and c.data.params["training.learning_rate"] for c in children)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.yaml", "summary.txt", "best.json", "sweep.yaml", "base_config.yaml"} <= artifacts


def first_trial_finished(sweep_dir: Path) -> bool:
    results = sorted((sweep_dir / "tune").glob("run_trial_*_00000_*/result.json"))
    return bool(results) and "trial/completed" in results[0].read_text()


def test_interrupted_sweep_resumes_keeping_finished_trials_and_reports_a_crashed_one(
    tmp_path: Path, warm_start: Path, clean_env: None
) -> None:
    # three trials (cases) one at a time; the second crashes (its init_dir does not exist) and the sweep goes on
    cases = [{"training.seed": 1}, {"model.init_dir": str(tmp_path / "no_such_policy")}, {"training.seed": 2}]
    sweep = write_sweep(
        tmp_path / "resumable.yaml", name="resumable", max_concurrent_trials=1, scheduler={"type": "fifo"},
        trial_resources=RESOURCES, overrides={**TINY, "training.ppo_steps": 2}, cases=cases,
    )
    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "rlvr_ray.tune", "--config-name", "train_rlvr_test", "--sweep", str(sweep),
            "--output-dir", str(sweep_dir), f"warm_start_dir={warm_start}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 420
    while not first_trial_finished(sweep_dir):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-4000:]
        time.sleep(1)
    time.sleep(3)  # Tune marks the trial TERMINATED once its function returns
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=180) == 130, (tmp_path / "first.log").read_text()[-4000:]
    first = (tmp_path / "first.log").read_text()
    assert "--resume" in first
    (trial0,) = sorted((sweep_dir / "trials").glob("*_00000"))
    done_at = (trial0 / "eval_after.json").stat().st_mtime
    result0 = next((sweep_dir / "tune").glob(f"run_trial_{trial0.name}_*/result.json"))
    reports = len(result0.read_text().splitlines())

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    print(f"resumed sweep:\n{(sweep_dir / 'summary.txt').read_text()}")
    assert (trial0 / "eval_after.json").stat().st_mtime == done_at, "the finished trial ran again"
    assert len(result0.read_text().splitlines()) == reports

    rows = {line.split()[0]: line for line in (sweep_dir / "summary.txt").read_text().splitlines()[1:]}
    assert sorted(rows) == sorted(p.name for p in (sweep_dir / "trials").iterdir() if not p.name.startswith("_"))
    assert len(rows) == 3
    columns = [line.split()[1:3] for line in sorted(rows.values())]  # the cases, in trial order
    assert columns == [["1", "-"], ["-", str(tmp_path / "no_such_policy")], ["2", "-"]]
    statuses = [line.split()[5] for line in rows.values()]  # trial, seed, init_dir, metric, evals, status
    assert statuses.count("finished") == 2 and statuses.count("failed") == 1
    failed = next(line for line in rows.values() if " failed " in line)
    assert "ConfigError: model.init_dir:" in failed and "not a saved policy directory" in failed
    parent, children = mlflow_runs(sweep_dir)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
