"""End to end on a real local Ray: rollout actors, verifier pool, Ray Train learner, weight sync, MLflow.

Each test starts its own Ray (inside `python -m rlvr_ray.main`) and stops it when the process ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# A run in which RL visibly helps within a few steps: a very short warm start that often misses the answer format
# (`= operand <eoe>`), rewarded on that format for k=1 problems.
LEARNS = [
    "sft.steps=15",
    "training.reward_type=boxed",
    "training.ppo_steps=12",
    "training.eval_every=4",
    "training.checkpoint_every=4",
    "training.complexity_range=[1,1]",
    "training.learning_rate=2e-3",
    "training.batch_size=128",
    "training.mini_batch_size=64",
    "eval.complexities=[1]",
]


def run_main(
    tmp: Path, *overrides: str, config: str = "train_rlvr_test", timeout: int = 900
) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "rlvr_ray.main",
        "--config-name",
        config,
        f"output_dir={tmp / 'run'}",
        f"warm_start_dir={tmp / 'warm_start'}",
        f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        *overrides,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def history(tmp: Path, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    run_id = (tmp / "run" / "mlflow_run_id").read_text().strip()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_run_outputs(tmp: Path, steps: int) -> None:
    """Outputs on disk, on-policy logprobs, versions advancing every step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp / "run"
    for name in [
        "final_policy/model.safetensors",
        "eval_table.txt",
        "eval_before.json",
        "eval_after.json",
        "curves.png",
        "config.yaml",
        "checkpoints/latest",
    ]:
        assert (run / name).exists(), name
    AutoModelForCausalLM.from_pretrained(str(run / "final_policy"))
    assert AutoTokenizer.from_pretrained(str(run / "final_policy")).eos_token == "<eoe>"
    mismatch = history(tmp, "mismatch/logprob_max_abs_diff")
    assert [s for s, _ in mismatch] == list(range(steps))
    assert max(v for _, v in mismatch) < 1e-3, "engine and learner disagree on the sampled tokens' logprobs"
    assert [v for _, v in history(tmp, "sync/version")] == list(range(1, steps + 1))


def test_torch_engine_run_learns_and_syncs(tmp_path: Path) -> None:
    proc = run_main(tmp_path, *LEARNS)
    check_run_outputs(tmp_path, 12)
    assert "before -> after" in proc.stdout and str(tmp_path / "run" / "final_policy") in proc.stdout
    rewards = [v for _, v in history(tmp_path, "reward/boxed_mean")]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.05, rewards
    assert len(history(tmp_path, "eval/accuracy")) == 3


def test_stopped_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    run_main(tmp_path, "training.ppo_steps=3", "training.checkpoint_every=3")
    first_id = (tmp_path / "run" / "mlflow_run_id").read_text()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_000003"
    run_main(tmp_path, "training.ppo_steps=6", "training.checkpoint_every=3")
    assert (tmp_path / "run" / "mlflow_run_id").read_text() == first_id
    check_run_outputs(tmp_path, 6)  # steps 0-2 from the first process, 3-5 from the resumed one
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_000006"


@pytest.mark.vllm
def test_vllm_engine_run_syncs_weights_in_place(tmp_path: Path) -> None:
    proc = run_main(tmp_path, "rollout.engine=vllm", "training.ppo_steps=4", "training.eval_every=2", timeout=1200)
    check_run_outputs(tmp_path, 4)
    assert "before -> after" in proc.stdout
