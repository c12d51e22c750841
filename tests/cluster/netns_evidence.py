"""What a run logged, read back through MLflow only (as a laptop would): the run, its metrics, its artifacts
(final policy, eval table, ``ledger.json``), and the checks every multi-host and fault-injection test makes on them.

The ledger (``LoopState.ledger``, logged as ``ledger.json``) has one record per trained step, in the lineage of the
final weights: ``step``, ``prompt_digest``, ``num_samples``, ``behaviour_versions``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlvr_ray.config import RunConfig

LEDGER_ARTIFACT = "ledger.json"
POLICY_ARTIFACT = "final_policy"
EVAL_TABLE_ARTIFACT = "eval_table.txt"


def client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def runs_named(tracking_uri: str, run_name: str) -> list[Any]:
    """Every MLflow run (any experiment) with this name, newest first."""
    mlflow_client = client(tracking_uri)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    return list(
        mlflow_client.search_runs(
            experiments, filter_string=f"attributes.run_name = '{run_name}'", order_by=["attributes.start_time DESC"]
        )
    )


def finished_run(tracking_uri: str, run_name: str) -> Any:
    """The run named ``run_name`` that FINISHED (exactly one: a resumed job continues or replaces, never forks)."""
    runs = runs_named(tracking_uri, run_name)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    states = [(r.info.run_id[:8], r.info.status) for r in runs]
    assert len(finished) == 1, f"expected one FINISHED MLflow run named {run_name}, got {states}"
    return finished[0]


def download(tracking_uri: str, run_id: str, artifact: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client(tracking_uri).download_artifacts(run_id, artifact, str(dst)))


def read_ledger(tracking_uri: str, run_id: str, dst: Path) -> list[dict[str, Any]]:
    ledger = json.loads(download(tracking_uri, run_id, LEDGER_ARTIFACT, dst).read_text())
    assert isinstance(ledger, list) and all(isinstance(r, dict) for r in ledger), f"ledger.json: {ledger!r:.500}"
    return ledger


def metric_values(tracking_uri: str, run_ids: Sequence[str], names: Sequence[str]) -> list[float]:
    """Every logged value of any of ``names`` in any of ``run_ids``."""
    mlflow_client = client(tracking_uri)
    return [m.value for run_id in run_ids for name in names for m in mlflow_client.get_metric_history(run_id, name)]


def last_logged_step(tracking_uri: str, run_name: str, metric: str = "reward/mean") -> int:
    """The highest step (0-based) for which the newest run of that name logged ``metric``; -1 if none yet."""
    runs = runs_named(tracking_uri, run_name)
    if not runs:
        return -1
    history = client(tracking_uri).get_metric_history(runs[0].info.run_id, metric)
    return max((m.step for m in history), default=-1)


def wait_for_step(tracking_uri: str, run_name: str, step: int, timeout_s: float, job_state: Any) -> None:
    """Block until the run has logged ``step`` (a kill then lands mid-run); ``job_state()`` explains a timeout."""
    deadline = time.monotonic() + timeout_s
    while last_logged_step(tracking_uri, run_name) < step:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_name} never logged step {step} within {timeout_s:.0f}s: {job_state()}")
        time.sleep(0.2)


def uninterrupted_digests(cfg: RunConfig) -> list[str]:
    """The ledger's prompt digest of every step of an uninterrupted run of ``cfg``: the prompt stream is a pure
    function of (seed, step), so this computes them with the controller's own ledger_record on the sampled prompts
    instead of running the job a second time."""
    import numpy as np

    from rlvr_ray.controller import ledger_record
    from rlvr_ray.task.prompts import PromptSampler
    from rlvr_ray.task.vocab import Vocab
    from rlvr_ray.types import RolloutBatch

    t, task = cfg.training, cfg.generative_process
    sampler = PromptSampler(Vocab(task.p, tuple(task.operators)), t.complexity_range, t.prompts_per_step, t.seed,
                            t.max_prompt_length)  # fmt: skip
    digests = []
    for step in range(t.total_steps):
        batch = sampler.sample(step)
        size = len(batch)
        one_sample_each = RolloutBatch(
            prompt_ids=list(batch.prompt_ids), completion_ids=[[]] * size, logprobs=[[]] * size,
            group_ids=np.arange(size), answers=np.asarray(batch.answers), complexities=np.asarray(batch.complexities),
            policy_version=np.zeros(size, np.int64),
        )  # fmt: skip
        digests.append(str(ledger_record(step, one_sample_each)["prompt_digest"]))
    return digests


def check_ledger(ledger: Sequence[dict[str, Any]], cfg: RunConfig) -> None:
    """Every step exactly once, in order, each on the prompts an uninterrupted run trains on at that step (so no
    prompt lost or trained twice), with a full batch of samples from weights no newer than the step's own."""
    total_steps, samples_per_step = cfg.training.total_steps, cfg.training.batch_size
    steps = [record["step"] for record in ledger]
    assert steps == list(range(total_steps)), f"ledger steps {steps}, expected 0..{total_steps - 1} once each"
    digests = [str(record["prompt_digest"]) for record in ledger]
    assert len(set(digests)) == len(digests), f"two steps trained on the same prompts: {digests}"
    assert digests == uninterrupted_digests(cfg), "prompt digests differ from those of an uninterrupted run"
    sample_digests = [record.get("sample_digest") for record in ledger]
    assert None in sample_digests or len(set(sample_digests)) == total_steps, f"samples reused: {sample_digests}"
    samples = [record["num_samples"] for record in ledger]
    assert samples == [samples_per_step] * total_steps, f"samples per step {samples}, expected {samples_per_step}"
    for record in ledger:
        versions = record["behaviour_versions"]
        assert versions, f"step {record['step']}: no behaviour versions"
        assert all(int(v) <= int(record["step"]) for v in versions), f"step {record['step']}: versions {versions}"


def load_final_policy(tracking_uri: str, run_id: str, dst: Path) -> list[Any]:
    """Download the final policy through MLflow and evaluate it with rlvr_ray.eval (greedy, on a few problems)."""
    from rlvr_ray.eval import evaluate_model_dir

    policy = download(tracking_uri, run_id, POLICY_ARTIFACT, dst)
    assert (policy / "config.json").is_file(), f"final_policy artifact has {sorted(p.name for p in policy.iterdir())}"
    rows = evaluate_model_dir(str(policy), [1], n=8, seed=0, max_tokens=24)
    assert rows and all(0.0 <= row.accuracy <= 1.0 for row in rows)
    return rows
