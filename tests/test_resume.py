"""Exact resume: a run interrupted (SIGINT) after its step-N checkpoint and started again with the same command
ends with bit-identical weights and the same per-step ledger (prompts and samples) as an uninterrupted run of 2N
steps: same prompts, sampling seeds, optimizer state, RNG streams and in-flight rollouts (CPU, fp32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

N = 3
FAST = [  # the test config, smaller still: 4 prompts x 8 samples per step, one verifier
    f"training.ppo_steps={2 * N}",
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


def command(tmp: Path, name: str, warm_start: Path, staleness: int) -> list[str]:
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


@pytest.fixture(scope="module")
def warm_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm") / "warm_start"  # made by the first run, reused (same key) by the others


@pytest.mark.parametrize("staleness", [0, 1])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path: Path, warm_start: Path, staleness: int) -> None:
    run_to_end(command(tmp_path, "straight", warm_start, staleness))
    resumed = command(tmp_path, "resumed", warm_start, staleness)
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
