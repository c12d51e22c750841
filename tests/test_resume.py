"""Exact resume: a run interrupted (SIGINT) after its step-N checkpoint and started again with the same command
ends with bit-identical weights and the same per-step ledger (prompts and samples) as an uninterrupted run of 2N
steps: same prompts, sampling seeds, optimizer state, RNG streams and in-flight rollouts (CPU, fp32).

The one failure a run cannot survive, losing its Ray head (here: the local head's GCS SIGKILLed mid-run), ends the
run with one line naming the last checkpoint, exit code 3 and a FAILED MLflow run; the same command resumes from that
checkpoint, again to bit-identical weights."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

pytestmark = pytest.mark.slow

N = 3
FAST = [  # the test config, smaller still: 4 prompts x 8 samples per step, one verifier
    f"training.checkpoint_every={N}",
    "training.batch_size=32",
    "training.mini_batch_size=16",
    "sft.steps=10",
    "verifier.num_actors=1",
    # A held-out eval after every step: it must not perturb the trajectory, and it spaces the steps out (a tiny
    # step takes ~0.05 s) so that the interrupt lands before the next checkpoint.
    "training.eval_every=1",
    "eval.n=48",
    "eval.complexities=[2,3]",
]


def command(tmp: Path, name: str, warm_start: Path, staleness: int, steps: int = 2 * N) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlvr_ray.main",
        "--config-name",
        "train_rlvr_test",
        f"output_dir={tmp / name}",
        f"warm_start_dir={warm_start}",
        f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"training.max_staleness={staleness}",
        f"training.ppo_steps={steps}",
        *FAST,
    ]


def latest_step(run: Path) -> int | None:
    pointer = run / "checkpoints" / "latest.json"
    try:
        return int(json.loads(pointer.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_to_end(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


def interrupt_after_checkpoint(cmd: list[str], run: Path, step: int) -> None:
    """Start the run and SIGINT it as soon as its step-``step`` checkpoint is complete in storage."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and latest_step(run) != step:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the run ended before it could be interrupted"
    assert latest_step(run) == step, f"interrupted too late (latest {latest_step(run)}): {err[-3000:]}"


def weights(policy_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(policy_dir / "model.safetensors"))


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path: Path, warm_start: Path) -> None:
    """The synchronous loop (max_staleness 0); the pipelined one (1), with rollouts in flight at the checkpoint, is
    resumed to bit-identical weights by the head-lost test below."""
    run_to_end(command(tmp_path, "straight", warm_start, 0))
    resumed = command(tmp_path, "resumed", warm_start, 0)
    interrupt_after_checkpoint(resumed, tmp_path / "resumed", N)
    run_to_end(resumed)  # the same command again: resumes from step N
    straight_ledger = json.loads((tmp_path / "straight" / "ledger.json").read_text())
    resumed_ledger = json.loads((tmp_path / "resumed" / "ledger.json").read_text())
    assert [r["step"] for r in resumed_ledger] == list(range(2 * N))
    assert resumed_ledger == straight_ledger  # the same prompts and samples, step by step
    a, b = weights(tmp_path / "straight" / "final_policy"), weights(tmp_path / "resumed" / "final_policy")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ after the resume, e.g. {differ[:3]}"
    assert latest_step(tmp_path / "resumed") == 2 * N


def kill_gcs_after_checkpoint(cmd: list[str], run: Path, step: int, env: dict[str, str]) -> tuple[int, str, float]:
    """Start the run, SIGKILL its local head's GCS (a child of the driver) once the step-``step`` checkpoint is in
    storage; returns the run's exit code, its stderr and the seconds from the kill to its exit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    family: list[psutil.Process] = []
    try:
        while proc.poll() is None and (latest_step(run) or 0) < step:
            time.sleep(0.05)
        family = psutil.Process(proc.pid).children(recursive=True)
        (gcs,) = [p for p in family if p.name() == "gcs_server"]
        gcs.kill()
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err, time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in family:  # the lost head's raylet and workers, which outlive the driver for a while
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_head_lost_fails_with_one_line_and_the_same_command_resumes(tmp_path: Path, warm_start: Path) -> None:
    from mlflow.tracking import MlflowClient

    steps, reconnect_s = 24, 20  # Ray's own processes give up on the lost GCS after reconnect_s (default 60)
    run_to_end(command(tmp_path, "straight", warm_start, 1, steps))
    cmd, run = command(tmp_path, "head-lost", warm_start, 1, steps), tmp_path / "head-lost"
    env = {**os.environ, "RAY_gcs_rpc_server_reconnect_timeout_s": str(reconnect_s)}
    code, err, exit_s = kill_gcs_after_checkpoint(cmd, run, N, env)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(errors) == 1, f"exit {code}, error lines {errors}:\n{err[-4000:]}"
    checkpoint = latest_step(run)
    assert checkpoint is not None and N <= checkpoint < steps, f"checkpoint {checkpoint} of {steps}: {errors[0]}"
    assert "lost the Ray head" in errors[0] and f"the last checkpoint is step {checkpoint} in " in errors[0]
    assert "run the same command again" in errors[0]
    assert exit_s < reconnect_s and "Failed to connect to GCS" not in err, f"{exit_s:.1f}s:\n{err[-3000:]}"
    run_id = (run / "mlflow_run_id").read_text().strip()
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"

    run_to_end(cmd)  # the same command, on a fresh local head: resumes from the checkpoint
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger == json.loads((tmp_path / "straight" / "ledger.json").read_text())
    a, b = weights(tmp_path / "straight" / "final_policy"), weights(run / "final_policy")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
