"""``python -m rlvr_ray.tune --config-name NAME [--sweep SWEEP] [--resume] [--output-dir DIR] [key=value ...]``

Ray Tune sweep over dotted config paths (a file in ``configs/sweeps/``). Each trial is a full run (its own rollout
actors, verifier pool and Ray Train learner) that reports every held-out evaluation to Tune and logs to MLflow as a
child of one parent run; ASHA stops poor trials early. Ends with a table of every trial, the best config as a
ready-to-run YAML and the best trial's policy directory. ``--resume`` continues an interrupted sweep.

Sweep directory (``--output-dir``, default ``<config output_dir>/sweeps/<sweep name>``)::

    sweep.yaml, base_config.yaml   what the sweep runs (``--resume`` reuses them)
    mlflow.db, mlartifacts/        MLflow store when neither tracking.tracking_uri nor $MLFLOW_TRACKING_URI is set
    tune/                          the Tune experiment (Tuner.restore)
    trials/<trial id>/             each trial's output_dir (final_policy/, checkpoints/, eval_*.json, ...)
    summary.txt, best_config.yaml, best.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlvr_ray.config import ConfigError, RunConfig, dump_config, load_config, validate_config
from rlvr_ray.sweep import (
    CASE,
    Space,
    SweepConfig,
    TrialRow,
    best_config_yaml,
    best_row,
    custom_resources,
    default_max_t,
    format_table,
    load_sweep,
    probe_configs,
    resolve_sweep_path,
    trial_config,
    trial_cpus,
    trial_params,
    validate_sweep,
)
from rlvr_ray.tracking import RUN_ID_FILE, Tracker, flatten_params

COMPLETED = "trial/completed"  # set in a trial's final report: the run finished and saved its final policy
TUNE_DIR = "tune"


@dataclass
class SweepContext:
    """Everything a trial needs (pickled into each trial by ``tune.with_parameters``)."""

    base: RunConfig
    sweep: SweepConfig
    sweep_dir: Path
    tracking_uri: str
    parent_run_id: str

    def trial_dir(self, trial_id: str) -> Path:
        return self.sweep_dir / "trials" / trial_id

    def trial_config(self, params: dict[str, Any], trial_id: str) -> RunConfig:
        """The trial's run config from its Tune config (a case index is expanded into the case's settings)."""
        run_name = f"{self.sweep.name}-{trial_id}"
        settings = trial_params(self.sweep, params)
        return trial_config(self.base, self.sweep, settings, self.trial_dir(trial_id), self.tracking_uri, run_name)

    def placement(self, params: dict[str, Any]) -> Any:
        """The trial's placement group (Tune calls this with each trial's params); see :func:`trial_bundles`."""
        from ray.tune import PlacementGroupFactory

        try:
            cfg = self.trial_config(params, "_resources")
        except ConfigError:  # the trial itself fails with this error and is reported; size it like the base
            cfg = self.trial_config({}, "_resources")
        return PlacementGroupFactory(trial_bundles(cfg, self.sweep.trial_resources.trial_cpus))


# ----------------------------------------------------------------------------------------------------------------
# The trial


def run_trial(params: dict[str, Any], ctx: SweepContext) -> None:
    """One Tune trial: a full run reporting every evaluation to Tune, then one final report marking completion."""
    from ray import tune

    from rlvr_ray.run import run_training

    cfg = ctx.trial_config(params, tune.get_context().get_trial_id())
    result = run_training(cfg, parent_run_id=ctx.parent_run_id, report_to_tune=True)
    tune.report(final_report(result.after, Tracker(result.tracking_uri, result.mlflow_run_id), ctx.sweep.metric, cfg))


def final_report(after: list[Any], tracker: Tracker, metric: str, cfg: RunConfig) -> dict[str, float]:
    """The final policy's held-out metrics, the sweep metric's last logged value if it is not one of them."""
    from rlvr_ray.eval import rows_to_metrics

    metrics = rows_to_metrics(after)
    if metric not in metrics:
        history = sorted(tracker.metric_history(metric))
        metrics[metric] = history[-1][1] if history else math.nan
    return {**metrics, "step": cfg.training.total_steps, COMPLETED: 1.0}


# ----------------------------------------------------------------------------------------------------------------
# Setting up


def trial_bundles(cfg: RunConfig, process_cpus: float) -> list[dict[str, float]]:
    """Bundles of a trial's placement group: the trial process, then one per rollout actor and verifier actor.

    Tune schedules a trial's child actors inside the trial's placement group, so the rollout and verifier actors
    the trial starts must fit in it. The learner's workers are not in it: Ray Train reserves their own group.
    """
    rollout = {"CPU": cfg.rollout.num_cpus, "GPU": cfg.rollout.num_gpus}
    if cfg.rollout.resource:
        rollout[cfg.rollout.resource] = 1
    verifier = {"CPU": cfg.verifier.num_cpus}
    if cfg.verifier.resource:
        verifier[cfg.verifier.resource] = 1
    bundles = [{"CPU": process_cpus}, *[rollout] * cfg.rollout.num_actors, *[verifier] * cfg.verifier.num_actors]
    nonzero = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    rest = [b for b in nonzero[1:] if b]
    return [nonzero[0], *rest] if nonzero[0] or rest else [{"CPU": 0.01}]  # Tune needs something to reserve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.tune", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-name", default="train_rlvr_model", help="base config in configs/ (without .yaml)")
    parser.add_argument("--sweep", default="reward_weights", help="sweep file, or a name in configs/sweeps/")
    parser.add_argument("--output-dir", default=None, help="sweep directory (default: OUTPUT_DIR/sweeps/NAME)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in the sweep directory")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the base config, e.g. training.ppo_steps=50")
    return parser.parse_args(argv)


def sweep_dir_for(base: RunConfig, sweep: SweepConfig, output_dir: str | None) -> Path:
    return Path(output_dir or Path(base.output_dir) / "sweeps" / sweep.name).resolve()


def prepare(args: argparse.Namespace) -> tuple[RunConfig, SweepConfig, Path]:
    """Load and validate the base config and the sweep; on resume, the stored ones are used."""
    base = load_config(args.config_name, args.overrides)
    sweep = validate_sweep(base, load_sweep(resolve_sweep_path(args.sweep)))
    sweep_dir = sweep_dir_for(base, sweep, args.output_dir)
    stored = (sweep_dir / "sweep.yaml", sweep_dir / "base_config.yaml")
    if not args.resume:
        if (sweep_dir / TUNE_DIR).exists():
            raise ConfigError(f"{sweep_dir} already holds a sweep: add --resume to continue it, or pick --output-dir")
        return base, sweep, sweep_dir
    if not all(p.is_file() for p in stored):
        raise ConfigError(f"--resume: no sweep to resume in {sweep_dir}")
    stored_base = validate_config(yaml.safe_load(stored[1].read_text()))
    stored_sweep = SweepConfig.model_validate(yaml.safe_load(stored[0].read_text()))
    if dump_config(stored_base) != dump_config(base) or stored_sweep != sweep:
        print(f"[tune] note: resuming with the config and sweep stored in {sweep_dir} (the command line's differ)")
    return stored_base, stored_sweep, sweep_dir


def resolve_sweep_tracking_uri(base: RunConfig, sweep_dir: Path) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else a SQLite store in the sweep directory (all trials use it)."""
    return base.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{sweep_dir / 'mlflow.db'}"


def open_parent_run(base: RunConfig, sweep: SweepConfig, sweep_dir: Path, uri: str) -> Tracker:
    """The sweep's MLflow parent run (reopened on resume); the sweep and base config are its params/artifacts."""
    id_file = sweep_dir / RUN_ID_FILE
    if id_file.is_file():
        return Tracker.start(uri, base.tracking.experiment_name, "", run_id=id_file.read_text().strip())
    if uri == f"sqlite:///{sweep_dir / 'mlflow.db'}":
        ensure_experiment(uri, base.tracking.experiment_name, sweep_dir / "mlartifacts")
    tracker = Tracker.start(uri, base.tracking.experiment_name, f"sweep-{sweep.name}")
    id_file.write_text(tracker.run_id)
    tracker.set_tag("sweep.dir", str(sweep_dir))
    tracker.log_params({f"sweep.{k}": v for k, v in flatten_params(sweep.model_dump(mode="json")).items()})
    for path in (sweep_dir / "sweep.yaml", sweep_dir / "base_config.yaml"):
        tracker.log_artifact(path)
    return tracker


def ensure_experiment(uri: str, name: str, artifacts: Path) -> None:
    """Create the experiment with its artifacts beside the store (not in the current directory's ./mlruns)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def start_ray(base: RunConfig, sweep: SweepConfig) -> None:
    """Join the cluster (``ray job submit`` / ``RAY_ADDRESS``), else a local Ray sized for the concurrent trials."""
    from rlvr_ray.run import init_ray

    init_ray(*local_resources(base, sweep))


def local_resources(base: RunConfig, sweep: SweepConfig) -> tuple[int, dict[str, float]]:
    """Logical CPUs = max(physical, what max_concurrent_trials of the largest probed trial hold + 1)."""
    configs = probe_configs(base, sweep)
    n = sweep.max_concurrent_trials
    need = max(trial_cpus(c, sweep.trial_resources) for c in configs) * n
    custom: dict[str, float] = {}
    for cfg in configs:
        for name, units in custom_resources(cfg).items():
            custom[name] = max(custom.get(name, 0), units * n)
    return max(math.ceil(need) + 1, os.cpu_count() or 1), custom


# ----------------------------------------------------------------------------------------------------------------
# Placement groups left behind by stopped trials


def release_orphaned_placement_groups() -> tuple[int, int]:
    """Remove this job's placement groups whose creator actor is dead; returns (removed, still held by live actors).

    Ray Train reserves each learner's placement group from its controller actor. When ASHA stops a trial, Tune ends
    the trial process and with it the controller, but a placement group lives as long as the job. Train's own
    cleaner removes it only when Ray's state API answers (it does not when the dashboard is off, or when several
    local Ray instances run on one machine); otherwise every early-stopped trial would keep its learner's CPUs/GPUs
    until the sweep ends. Uses Ray's GCS records (ray is pinned).
    """
    import ray
    from ray._private.state import state
    from ray._raylet import PlacementGroupID
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    accessor: Any = state._global_state_accessor
    table_data: Any = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]  # generated protobuf
    removed = live = 0
    for pg_hex, info in ray.util.placement_group_table().items():
        if info.get("state") == "REMOVED":
            continue
        pg_id = PlacementGroupID.from_hex(pg_hex)
        data = table_data.FromString(accessor.get_placement_group_info(pg_id))
        made_by_actor = data.creator_actor_id and set(data.creator_actor_id) != {0xFF}
        if not made_by_actor or data.is_detached or data.creator_job_id.hex() != job:
            continue
        if data.creator_actor_dead:
            remove_placement_group(PlacementGroup(pg_id))
            removed += 1
        else:
            live += 1
    return removed, live


def release_after_sweep(timeout_s: float = 60.0) -> None:
    """Once Tune is done, the last stopped trials' controllers may still be dying: release their groups too."""
    deadline = time.monotonic() + timeout_s
    try:
        while release_orphaned_placement_groups()[1] and time.monotonic() < deadline:
            time.sleep(1.0)
    except Exception as err:  # Ray internals moved: the groups go when the job ends
        print(f"[tune] warning: cannot release stopped trials' placement groups ({err!r})", file=sys.stderr)


def orphan_release_callback(every_s: float = 5.0) -> Any:
    """A Tune callback running :func:`release_orphaned_placement_groups` every ``every_s`` seconds of the sweep."""
    from ray.tune import Callback

    class ReleaseOrphanedPlacementGroups(Callback):
        def __init__(self) -> None:
            self.last = 0.0
            self.enabled = True

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            if not self.enabled or time.monotonic() - self.last < every_s:
                return
            self.last = time.monotonic()
            try:
                release_orphaned_placement_groups()
            except Exception as err:  # Ray internals moved: stopped trials then hold resources until the end
                print(f"[tune] warning: cannot release stopped trials' placement groups ({err!r})", file=sys.stderr)
                self.enabled = False

    return ReleaseOrphanedPlacementGroups()


# ----------------------------------------------------------------------------------------------------------------
# Tune


def tune_domain(space: Space) -> Any:
    """Space -> Tune search domain (a plain dict from kind to constructor)."""
    from ray import tune

    makers = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda bounds: tune.uniform(*bounds),
        "loguniform": lambda bounds: tune.loguniform(*bounds),
    }
    return makers[space.kind](space.value)


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune's param space: each dimension's domain, and a grid over the cases' indices (``CASE``) when there are
    cases (:func:`rlvr_ray.sweep.trial_params` turns a trial's Tune config back into dotted settings)."""
    from ray import tune

    space = {key: tune_domain(dim) for key, dim in sweep.space.items()}
    if sweep.cases:
        space[CASE] = tune.grid_search(list(range(len(sweep.cases))))
    return space


def make_scheduler(base: RunConfig, sweep: SweepConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = sweep.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    max_t = s.max_t or default_max_t(base, sweep)
    grace = min(s.grace_period, max_t)
    return ASHAScheduler(
        time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=s.reduction_factor
    )


def make_tuner(ctx: SweepContext, resume: bool) -> Any:
    """A fresh Tuner, or ``Tuner.restore``: finished trials are kept as they are; unfinished and errored trials run
    again under their own trial id, so each continues from its own learner checkpoint and MLflow run (a transient
    crash gets another chance; a deterministic one fails again and is reported)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), ctx.placement)
    path = ctx.sweep_dir / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(path)):  # (interrupted before Tune saved anything: start afresh)
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    sweep = ctx.sweep
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
            scheduler=make_scheduler(ctx.base, sweep),
            # the concurrency limit lives in the searcher (Tune ignores max_concurrent_trials next to a given one)
            search_alg=BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials),
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(ctx.sweep_dir), verbose=1, callbacks=[orphan_release_callback()],
            failure_config=tune.FailureConfig(max_failures=0),  # a crashed trial is reported; the sweep goes on
        ),
    )


# ----------------------------------------------------------------------------------------------------------------
# Results


def trial_status(tune_status: str, last: dict[str, Any]) -> str:
    """Tune's status in words: finished / stopped early (ASHA) / failed / interrupted / pending."""
    if tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED":
        return "finished" if last.get(COMPLETED) else "stopped early"
    return "interrupted" if last else "pending"


def collect_rows(ctx: SweepContext) -> list[TrialRow]:
    """One row per trial of the sweep's Tune experiment, in trial order."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(ctx.sweep_dir / TUNE_DIR))
    rows = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        last = trial.last_result or {}
        error = trial.get_error() if trial.status == "ERROR" else None
        metric = last.get(ctx.sweep.metric)
        rows.append(TrialRow(
            trial_id=trial.trial_id, params=trial_params(ctx.sweep, trial.config),
            metric=None if metric is None else float(metric), status=trial_status(trial.status, last),
            evals=int(last.get("training_iteration", 0)) - (1 if last.get(COMPLETED) else 0),
            error=last_error_line(error), output_dir=str(ctx.trial_dir(trial.trial_id)),
        ))
    return rows


def last_error_line(error: Any) -> str:
    """The most telling line of a trial's error (the final ``Type: message`` line of the remote traceback)."""
    if not error:
        return ""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def policy_dir(trial_dir: Path) -> Path | None:
    """The trial's final policy, else (stopped early) its latest checkpoint's policy."""
    from rlvr_ray.learner.checkpoint import latest_checkpoint

    if (trial_dir / "final_policy" / "config.json").is_file():
        return trial_dir / "final_policy"
    checkpoint = latest_checkpoint(trial_dir)
    return checkpoint / "policy" if checkpoint is not None else None


def close_child_runs(rows: list[TrialRow], uri: str) -> None:
    """Tag each trial's MLflow run with its sweep status and make its MLflow status agree: a trial Tune stopped or
    interrupted ends KILLED (its process may have been torn down mid-step, RUNNING, or have caught that as FAILED)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ended = {"stopped early": "KILLED", "failed": "FAILED", "interrupted": "KILLED"}
    for row in rows:
        id_file = Path(row.output_dir) / RUN_ID_FILE
        if not id_file.is_file():
            continue
        run_id = id_file.read_text().strip()
        client.set_tag(run_id, "sweep.status", row.status)
        client.set_tag(run_id, "sweep.trial_id", row.trial_id)
        if row.status in ended and client.get_run(run_id).info.status not in (ended[row.status], "FINISHED"):
            client.set_terminated(run_id, status=ended[row.status])


def write_results(ctx: SweepContext, rows: list[TrialRow], parent: Tracker) -> list[str]:
    """summary.txt, best_config.yaml and best.json in the sweep directory and on the parent run; lines to print."""
    table = format_table(rows, ctx.sweep.metric, ctx.sweep.swept_keys)
    (ctx.sweep_dir / "summary.txt").write_text(table + "\n")
    parent.log_artifact(ctx.sweep_dir / "summary.txt")
    lines = [table, ""]
    best = best_row(rows, ctx.sweep.mode)
    if best is None:
        return [*lines, "no trial reported the metric: no best config"]
    assert best.metric is not None
    policy = policy_dir(Path(best.output_dir))
    best_yaml = ctx.sweep_dir / "best_config.yaml"
    header = [f"Best trial {best.trial_id} of sweep {ctx.sweep.name} ({ctx.sweep.metric} = {best.metric:.4f}).",
              f"  cp {best_yaml} configs/NAME.yaml && python -m rlvr_ray.main --config-name NAME"]
    best_yaml.write_text(best_config_yaml(ctx.base, ctx.sweep, best.params, header))
    summary = {"trial": best.trial_id, "params": best.params, "metric": ctx.sweep.metric, "value": best.metric,
               "status": best.status, "policy_dir": str(policy) if policy else None, "best_config": str(best_yaml)}
    (ctx.sweep_dir / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    for path in (best_yaml, ctx.sweep_dir / "best.json"):
        parent.log_artifact(path)
    parent.log_metrics({f"best/{ctx.sweep.metric}": best.metric}, 0)
    parent.set_tag("sweep.best_trial", best.trial_id)
    params = " ".join(f"{k}={v}" for k, v in best.params.items())
    return [*lines, f"best trial: {best.trial_id} ({best.status}) {ctx.sweep.metric}={best.metric:.4f}  {params}",
            f"best config: {best_yaml}", f"best policy: {policy}"]


# ----------------------------------------------------------------------------------------------------------------
# Driver


def run_sweep(args: argparse.Namespace) -> int:
    base, sweep, sweep_dir = prepare(args)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    (sweep_dir / "base_config.yaml").write_text(dump_config(base))
    uri = resolve_sweep_tracking_uri(base, sweep_dir)
    start_ray(base, sweep)  # first: Ray forks helpers at start-up, before anything starts JAX threads here
    parent = open_parent_run(base, sweep, sweep_dir, uri)
    ctx = SweepContext(base, sweep, sweep_dir, uri, parent.run_id)
    make_shared_warm_start(ctx, parent)
    print(f"[tune] sweep {sweep.name}: {sweep_dir} (MLflow {uri}, parent run {parent.run_id})", flush=True)
    make_tuner(ctx, args.resume).fit()
    release_after_sweep()
    rows = collect_rows(ctx)
    close_child_runs(rows, uri)
    print("\n\n" + "\n".join(write_results(ctx, rows, parent)))
    print(f"mlflow: {uri} (parent run {parent.run_id})")
    unfinished = [r for r in rows if r.status in ("interrupted", "pending")]
    if unfinished:
        parent.end("KILLED")
        print(f"sweep interrupted ({len(unfinished)} trials unfinished): rerun the same command with --resume")
        return 130
    parent.end("FINISHED")
    return 0 if any(r.status != "failed" for r in rows) else 1


def make_shared_warm_start(ctx: SweepContext, parent: Tracker) -> None:
    """Make the warm start the trials share once, before any trial starts, so concurrent trials never race to train
    it (a Ray task placed like a learner worker, as in a single run; its SFT metrics go to the parent run)."""
    from rlvr_ray.run import sft_as_learner_task
    from rlvr_ray.sft import ensure_warm_start

    cfg = ctx.trial_config({}, "_shared")
    if cfg.warm_start_dir.startswith(str(ctx.trial_dir("_shared"))):
        return  # the space changes model/SFT settings: each trial makes its own
    ensure_warm_start(cfg, parent, train=sft_as_learner_task(cfg))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_sweep(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
