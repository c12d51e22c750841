"""MLflow tracking against a real `mlflow server` on 127.0.0.1, and the local SQLite default."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rlvr_ray.tracking import LATEST, MAXED, SUMMED, Tracker, flatten_params, reduce_window, resolve_tracking_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'db.sqlite'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not become healthy within 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_log_to_real_server_and_read_back(mlflow_server: str, tmp_path: Path) -> None:
    tracker = Tracker.start(mlflow_server, "tracking-test", "run-a")
    tracker.log_params(flatten_params({"training": {"learning_rate": 1e-4, "reward_type": "combined"}}))
    tracker.log_metrics({"reward/mean": 0.25, "loss/policy": float("nan")}, step=0)
    tracker.log_metrics({"reward/mean": 0.5}, step=1)
    (tmp_path / "table.txt").write_text("k acc\n1 0.9\n")
    tracker.log_artifact(tmp_path / "table.txt")
    child = Tracker.start(mlflow_server, "tracking-test", "child", parent_run_id=tracker.run_id)
    tracker.end()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    run = client.get_run(tracker.run_id)
    assert run.data.params["training.learning_rate"] == "0.0001"
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "reward/mean")] == [
        (0, 0.25),
        (1, 0.5),
    ]
    assert run.data.metrics["tracking/non_finite_metrics"] == 1.0  # the NaN was counted, not logged
    assert "loss/policy" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["table.txt"]
    assert run.info.status == "FINISHED"
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == tracker.run_id


def test_reopen_run_by_id(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker.start(uri, "exp", "run")
    first.log_metrics({"x": 1.0}, 0)
    first.end("KILLED")
    again = Tracker.start(uri, "exp", "", run_id=first.run_id)
    again.log_metrics({"x": 2.0}, 1)
    assert again.metric_history("x") == [(0, 1.0), (1, 2.0)]


def test_tracking_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("file:///x", tmp_path) == "file:///x"


@pytest.mark.slow
def test_final_policy_reaches_a_laptop_through_the_tracking_server(
    mlflow_server: str, tmp_path: Path, warm_start: Path
) -> None:
    """A run whose checkpoints go to a storage URI and whose results go to an MLflow server: the final policy and
    the ledger are fetched with the MLflow client into an empty directory, and the evaluator loads that policy."""
    import json

    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    from rlvr_ray.config import load_config
    from rlvr_ray.eval import evaluate_policy_dir

    overrides = [
        f"output_dir={tmp_path / 'run'}",
        f"warm_start_dir={warm_start}",
        f"storage_uri={tmp_path / 'store'}",
        f"tracking.tracking_uri={mlflow_server}",
        "training.ppo_steps=2",
        "training.checkpoint_every=2",
        "training.batch_size=32",
        "training.mini_batch_size=16",
        "sft.steps=10",
        "verifier.num_actors=1",
        "eval.n=8",
        "eval.complexities=[1]",
    ]
    cmd = [sys.executable, "-m", "rlvr_ray.main", "--config-name", "train_rlvr_test", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert (tmp_path / "store" / "run" / "latest.json").is_file() and not (tmp_path / "run" / "checkpoints").exists()
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    client = MlflowClient(mlflow_server)
    policy = Path(client.download_artifacts(run_id, "final_policy", str(laptop)))
    ledger = json.loads(Path(client.download_artifacts(run_id, "ledger.json", str(laptop))).read_text())
    assert [record["step"] for record in ledger] == [0, 1]
    local, fetched = (
        load_file(str(tmp_path / "run" / "final_policy" / "model.safetensors")),
        load_file(str(policy / "model.safetensors")),
    )
    assert all(torch.equal(local[k], fetched[k]) for k in local) and local.keys() == fetched.keys()
    rows = evaluate_policy_dir(str(policy), load_config("train_rlvr_test", overrides))
    after = json.loads((tmp_path / "run" / "eval_after.json").read_text())
    assert [r.accuracy for r in rows] == [row["accuracy"] for row in after]


def test_a_window_of_one_step_is_that_steps_values() -> None:
    step = {"reward/mean": 0.1, "async/staleness_max": 1.0, "verify/retries": 2.0, "time/train_s": 3.0}
    assert reduce_window([step]) == step


def test_each_kind_of_metric_is_reduced_its_own_way() -> None:
    window = [
        {"reward/mean": 0.1, "offpolicy/is_weight_max": 1.5, "verify/errors": 1.0, "update/lr": 2e-4},
        {"reward/mean": 0.4, "offpolicy/is_weight_max": 1.2, "verify/errors": 0.0, "update/lr": 1e-4},
        {"mismatch/logprob_max_abs_diff": 0.3},  # a key only some steps report
        {"reward/mean": 0.7, "mismatch/logprob_max_abs_diff": 0.1},
    ]
    assert reduce_window(window) == {
        "reward/mean": pytest.approx(0.4),  # over the three steps that report it
        "offpolicy/is_weight_max": 1.5,
        "verify/errors": 1.0,
        "update/lr": 1e-4,
        "mismatch/logprob_max_abs_diff": 0.3,
    }
    assert not (SUMMED & LATEST) and not (SUMMED & MAXED) and not (LATEST & MAXED)


@pytest.mark.parametrize("key", ["reward/mean", "async/staleness_max", "verify/retries"])
def test_a_nan_in_the_window_is_not_hidden(key: str) -> None:
    """NaN stays NaN whatever its position (log_metrics then drops it and counts it): a bad step is not averaged
    away, and max() of a list holding NaN would depend on the order."""
    for window in ([1.0, float("nan"), 2.0], [float("nan"), 1.0], [1.0, float("nan")]):
        assert math.isnan(reduce_window([{key: v} for v in window])[key])

