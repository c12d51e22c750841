"""MLflow tracking shared by the driver and the learner's rank 0.

The driver creates (or, on resume, reopens) the run; workers log to it by run id through ``MlflowClient``, so
any process that can reach the tracking URI can log without global MLflow state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RUN_ID_FILE = "mlflow_run_id"

SUMMED = frozenset({"verify/retries", "verify/errors", "verify/respawns"})
"""Counts of events within one step: a logged window reports how many happened in all its steps."""
LATEST = frozenset(
    {
        "async/refused_batches",
        "guard/trips",
        "recovery/learner_restarts",
        "recovery/rollout_respawns",
        "sync/engine_version",
        "time/train_s",
        "update/lr",
    }
)
"""Running totals and the state at the end of a step: a logged window reports its last step's value."""
MAXED = frozenset({"mismatch/logprob_max_abs_diff"})
"""Largest values (besides every ``*_max``): a logged window reports its largest."""


def reduce_window(steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One value per metric for the steps since the last log (``training.log_every``), so a step that is not logged
    loses nothing: the mean over the steps that report the metric, except the largest for ``*_max`` and
    :data:`MAXED`, the sum for :data:`SUMMED` and the last value for :data:`LATEST`. A NaN in the window stays NaN
    (:meth:`Tracker.log_metrics` drops it and counts it). One step is its own values.

    >>> reduce_window([{"reward/mean": 0.25, "async/staleness_max": 1.0, "verify/retries": 1.0, "time/train_s": 2.0},
    ...                {"reward/mean": 0.75, "async/staleness_max": 0.0, "verify/retries": 2.0, "time/train_s": 3.5},
    ...                {"eval/accuracy": 0.5}])
    {'reward/mean': 0.5, 'async/staleness_max': 1.0, 'verify/retries': 3.0, 'time/train_s': 3.5, 'eval/accuracy': 0.5}
    """
    values: dict[str, list[float]] = {}
    for metrics in steps:
        for key, value in metrics.items():
            values.setdefault(key, []).append(float(value))
    out = {}
    for key, seen in values.items():
        if key in LATEST:
            out[key] = seen[-1]
        elif key in SUMMED:
            out[key] = sum(seen)
        elif key in MAXED or key.endswith("_max"):
            out[key] = float("nan") if any(math.isnan(v) for v in seen) else max(seen)
        else:
            out[key] = sum(seen) / len(seen)
    return out


def resolve_tracking_uri(configured: str | None, output_root: Path) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else a local SQLite store beside the run directories."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    output_root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(output_root / 'mlflow.db').resolve()}"


class Tracker:
    """Logs to one MLflow run by id; cheap to pickle (holds strings only).

    >>> t = Tracker.start("sqlite:////tmp/rlvr_doctest_mlflow.db", "doctest", "demo")   # doctest: +SKIP
    >>> t.log_metrics({"reward/mean": 0.5}, step=0)                                     # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Tracker:
        """Create a run (a child of ``parent_run_id`` when given), or reopen ``run_id``."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            return cls(tracking_uri, run_id)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        tags = {"mlflow.runName": run_name}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, tags=tags, run_name=run_name)
        return cls(tracking_uri, run.info.run_id)

    @property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = set(self.client.get_run(self.run_id).data.params)
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            self.client.log_batch(self.run_id, params=fresh[i : i + 100])

    def update_params(self, params: dict[str, Any]) -> list[str]:
        """On a reopened run: log params it lacks; for each already logged with another value (MLflow params are
        immutable) set the tag ``param_update.<key>`` to the new value. Returns the keys whose value changed."""
        logged = self.client.get_run(self.run_id).data.params
        changed = [k for k, v in params.items() if k in logged and logged[k] != str(v)[:6000]]
        for key in changed:
            self.set_tag(f"param_update.{key}", str(params[key])[:5000])
        self.log_params(params)
        return changed

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Finite numbers only: NaN/inf would poison the MLflow charts, so they are dropped here with a count."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        dropped = len(metrics) - len(rows)
        if dropped:
            rows.append(Metric("tracking/non_finite_metrics", float(dropped), now, step))
        for i in range(0, len(rows), 500):
            self.client.log_batch(self.run_id, metrics=rows[i : i + 500])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]


def flatten_params(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> ``{"training.learning_rate": 1e-4, ...}`` for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat
