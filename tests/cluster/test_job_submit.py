"""`ray job submit --working-dir . -- python -m rlvr_ray.main --config-name train_rlvr_test` against a real Ray
head started on 127.0.0.1 (`ray start --head`), as a user would on a cluster; the head is stopped afterwards."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from ray_nodes import main_entrypoint, start_head, stop_nodes, submit_job

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_job_submit_runs_the_test_config(tmp_path: Path) -> None:
    temp_dir = tempfile.mkdtemp(prefix="rlvr-js-", dir="/tmp")
    try:
        dashboard, _ = start_head(temp_dir, {}, num_cpus=4)
        entrypoint = main_entrypoint(tmp_path)
        job = submit_job(dashboard, entrypoint, timeout=1100, working_dir=True)
    finally:
        stop_nodes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    logs = job.stdout
    assert job.returncode == 0 and "succeeded" in logs.lower(), f"{logs[-6000:]}\n{job.stderr[-3000:]}"
    assert "held-out greedy exact-answer accuracy (before -> after RL)" in logs
    assert f"final policy: {tmp_path / 'run' / 'final_policy'}" in logs
    assert (tmp_path / "run" / "final_policy" / "model.safetensors").is_file()
