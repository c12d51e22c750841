"""The driver of one run: connect Ray, make/reuse the warm start, start the actors, fit the Ray Train learner,
evaluate before/after, log artifacts. The step order itself lives in :mod:`rlvr_ray.controller`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rlvr_ray.config import ConfigError, ModelConfig, RunConfig, SFTConfig, TaskConfig, dump_config
from rlvr_ray.eval import EvalRow, format_before_after, rows_to_metrics
from rlvr_ray.guard import HOW_TO_EXTEND, LABELS, reason_holds
from rlvr_ray.learner.checkpoint import (
    FINGERPRINT_FILE,
    KEEP_PER_RUN,
    LOOP_FILE,
    CheckpointStore,
    fingerprint_mismatch,
    run_fingerprint,
)
from rlvr_ray.sft import TrainFn
from rlvr_ray.tracking import RUN_ID_FILE, Tracker, flatten_params, resolve_tracking_uri


@dataclass
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    final_policy: Path
    before: list[EvalRow]
    after: list[EvalRow]
    mlflow_run_id: str
    tracking_uri: str
    paths: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            "held-out greedy exact-answer accuracy (before -> after RL):",
            format_before_after(self.before, self.after),
        ]
        lines += [f"{name}: {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def local_ray_resources(cfg: RunConfig) -> tuple[int, dict[str, float]]:
    """Logical CPUs and role resources an embedded local Ray needs so every actor of the plan can be scheduled.

    Logical CPUs may exceed the physical cores: each actor runs one torch thread, so they time-share cleanly.
    """
    roles = [
        (cfg.rollout.num_actors, cfg.rollout.num_cpus, cfg.rollout.resource),
        (cfg.verifier.num_actors, cfg.verifier.num_cpus, cfg.verifier.resource),
        (cfg.learner.num_workers, cfg.learner.num_cpus, cfg.learner.resource),
    ]
    cpus = math.ceil(sum(n * c for n, c, _ in roles)) + 1
    custom: dict[str, float] = {}
    for count, _, name in roles:
        if name:
            custom[name] = custom.get(name, 0) + count
    return max(cpus, os.cpu_count() or 1), custom


def connect_ray(cfg: RunConfig) -> None:
    """Join the cluster this process runs in (``ray job submit`` / ``RAY_ADDRESS``), else start a local Ray."""
    init_ray(*local_ray_resources(cfg))


def init_ray(local_cpus: int, local_resources: dict[str, float]) -> None:
    """Join ``$RAY_ADDRESS`` if set, else start a local Ray with these logical CPUs and role resources."""
    import ray

    if ray.is_initialized():
        return
    # MKL_CBWR: Intel MKL's conditional numerical reproducibility, so the same inputs give the same bits in every
    # process (without it a matmul's result may depend on memory alignment, and two identical runs drift apart).
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "MKL_CBWR": "AUTO"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env, log_to_driver=True)
        return
    # The dashboard serves Ray's state API (Ray Train polls it); bound to loopback, never a public address.
    ray.init(num_cpus=local_cpus, resources=local_resources or None, dashboard_host="127.0.0.1", runtime_env=env)


def open_tracker(cfg: RunConfig, out: Path, parent_run_id: str | None) -> Tracker:
    """Reopen this output directory's MLflow run on resume (new run-length / cadence values recorded as
    ``param_update.*`` tags, since MLflow params are immutable), else create one."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, out.parent)
    id_file = out / RUN_ID_FILE
    params = flatten_params(cfg.model_dump(mode="json"))
    if cfg.resume and id_file.is_file():
        tracker = Tracker.start(uri, cfg.tracking.experiment_name, "", run_id=id_file.read_text().strip())
        tracker.update_params(params)
        return tracker
    tracker = Tracker.start(uri, cfg.tracking.experiment_name, cfg.tracking.run_name or out.name, parent_run_id)
    id_file.write_text(tracker.run_id)
    tracker.log_params(params)
    return tracker


def check_resume(cfg: RunConfig, store: CheckpointStore) -> str | None:
    """The checkpoint this run resumes from (storage path), or None. Raises :class:`ConfigError` (one line, nothing
    written or deleted) when it was made by a config that differs in a field that shapes the trajectory."""
    path = store.latest() if cfg.resume else None
    if path is None:
        return None
    differ = fingerprint_mismatch(store.read_json(f"{path}/{FINGERPRINT_FILE}"), run_fingerprint(cfg))
    if differ:
        raise ConfigError(
            f"output_dir {cfg.output_dir} holds a run made with another config ({'; '.join(differ)}); "
            "to start fresh pass another output_dir=PATH or resume=false (nothing is deleted), "
            "to continue that run drop these changes (only run length and log/eval/checkpoint cadence may change)"
        )
    pointer, t = store.pointer() or {}, cfg.training
    step, total, stopped = int(pointer.get("step", 0)), t.total_steps, pointer.get("stopped")
    if step >= total:
        print(
            f"[run] {cfg.output_dir} already holds this run trained for {step} steps (>= {total}): no training, the"
            " final policy is evaluated again; raise training.ppo_steps to extend it, or pass another output_dir",
            file=sys.stderr,
        )
    elif reason_holds(stopped, t.time_budget_s, float(pointer.get("train_s", 0.0)), t.heldout_guard_action):
        print(
            f"[run] {cfg.output_dir} already holds this run, stopped early by its {LABELS[str(stopped)]} after {step} "
            f"steps: no training, the final policy is evaluated again; {HOW_TO_EXTEND[str(stopped)]}, or pass another "
            "output_dir",
            file=sys.stderr,
        )
    else:
        print(f"[run] resuming {cfg.output_dir} from its step-{step} checkpoint ({path})", file=sys.stderr)
    return path


def sft_as_learner_task(cfg: RunConfig) -> TrainFn:
    """SFT as a Ray task placed like a learner worker (its GPU and role resource), not on the driver / head pod.
    The task returns the policy's bytes through the object store; they are written to ``out_dir`` here."""
    import ray

    from rlvr_ray.policy import write_packed
    from rlvr_ray.sft import train_sft_packed

    options: dict[str, Any] = {"num_cpus": cfg.learner.num_cpus, "num_gpus": 1 if cfg.learner.use_gpu else 0}
    if cfg.learner.resource:
        options["resources"] = {cfg.learner.resource: 1}
    remote_sft = ray.remote(train_sft_packed).options(**options)

    def run(task: TaskConfig, model: ModelConfig, sft: SFTConfig, out_dir: Path, tracker: Tracker | None) -> Path:
        packed: dict[str, bytes] = ray.get(remote_sft.remote(task, model, sft, tracker))
        return write_packed(packed, out_dir)

    return run


def baseline_eval(cfg: RunConfig, init_dir: Path, policy_digest: str, out: Path) -> list[EvalRow]:
    """Held-out table of the starting policy; cached (keyed by the eval config and the policy's content) so a
    resumed run compares against the same baseline, and a changed eval config computes a new one."""
    from rlvr_ray.eval import eval_max_tokens, evaluate_policy_dir

    cache = out / "eval_before.json"
    key = {
        "eval": cfg.eval.model_dump(mode="json"),
        "max_tokens": eval_max_tokens(cfg),
        "generative_process": cfg.generative_process.model_dump(mode="json"),
        "policy_sha256": policy_digest,
        "row_fields": [f.name for f in fields(EvalRow)],  # rows cached before a field was added are made again
    }
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if isinstance(cached, dict) and cached.get("key") == key:
            return [EvalRow(**row) for row in cached["rows"]]
    rows = evaluate_policy_dir(str(init_dir), cfg)
    cache.write_text(json.dumps({"key": key, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


def check_competence(cfg: RunConfig, before: list[EvalRow], tracker: Tracker) -> None:
    """Warn (one line) when the starting policy is no better than always giving the most common answer
    (:func:`rlvr_ray.guard.competence`); its margin over that is tagged on the run either way."""
    from rlvr_ray.guard import competence, competence_line, watched

    start = watched(((r.complexity, r.accuracy, r.n) for r in before), cfg.training.complexity_range)
    constant = {r.complexity: r.constant_answer for r in before}
    margin, z = competence(start, constant)
    tracker.set_tag("warm_start.above_constant_answer", f"{margin:+.3f} ({z:.1f} SE)")
    line = competence_line(start, constant)
    if line is not None:
        print(line, file=sys.stderr)


def fit_learner(
    cfg: RunConfig,
    init: Any,
    tracker: Tracker,
    report_to_tune: bool,
    store: CheckpointStore,
    group: Any,
    scorer: Any,
    baseline: list[tuple[int, float, int]] | None = None,
) -> None:
    """Start the verifiers, then run the Ray Train learner (whose rank 0 runs the controller) with the rollout
    actors of ``group`` (a RolloutGroup, perhaps still starting; its caller shuts it down).

    ``init`` is an object ref to the packed starting policy: actors and workers on any host materialise it locally.
    ``baseline`` is its held-out eval as ``(complexity, accuracy, n)`` rows, the first point the held-out guard can
    fall from.
    Checkpoints go to ``store`` through Ray Train (a fresh Ray Train run per driver start; workers resume from the
    store's latest checkpoint, or Ray Train's own after a worker-group restart).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from rlvr_ray.controller import train_loop_per_worker
    from rlvr_ray.verify.pool import VerifierPool

    run_name = f"rl-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if not cfg.resume:
        store.set_latest(run_name, None, 0)  # a fresh lineage: later resumes start here; older checkpoints stay
    pool = VerifierPool(scorer, cfg.verifier)
    try:
        group.wait_ready()
        callbacks: list[Any] = []
        if report_to_tune:
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
        worker_resources: dict[str, float] = {"CPU": cfg.learner.num_cpus}
        if cfg.learner.resource:
            worker_resources[cfg.learner.resource] = 1
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "cfg": cfg.model_dump(mode="json"),
                "init_dir": init,
                "rollout_group": group,
                "verifier_pool": pool,
                "tracker": tracker,
                "baseline": baseline,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.learner.num_workers, use_gpu=cfg.learner.use_gpu, resources_per_worker=worker_resources
            ),
            run_config=ray.train.RunConfig(
                name=run_name,
                storage_path=store.root,
                storage_filesystem=store.fs,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=KEEP_PER_RUN),
                failure_config=ray.train.FailureConfig(max_failures=cfg.learner.max_failures),
                callbacks=callbacks,
            ),
        )
        trainer.fit()
    finally:
        pool.shutdown()


def make_scorer(cfg: RunConfig, init_dir: Path) -> Any:
    """The reward function the verifier actors run (pure, picklable)."""
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.verify.rewards import score_batch

    t = cfg.training
    return functools.partial(
        score_batch,
        vocab=load_vocab(init_dir),
        reward_type=t.reward_type,
        boxed_weight=t.boxed_weight,
        correct_weight=t.correct_weight,
    )


def run_training(
    cfg: RunConfig, parent_run_id: str | None = None, report_to_tune: bool = False, watch_head: bool = False
) -> RunResult:
    """Run (or resume) one RL training run end to end. The driver writes under ``cfg.output_dir`` on its own host;
    checkpoints go to the storage (``storage_uri``); nothing else needs a filesystem shared with the workers.

    ``watch_head``: this process is the job's driver; if the Ray head is lost it exits with one line (exit code 3,
    see :mod:`rlvr_ray.cluster.head_watch`) and the MLflow run marked FAILED."""
    import ray

    from rlvr_ray.policy import pack_policy_dir, packed_digest
    from rlvr_ray.rollout.actor import RolloutGroup
    from rlvr_ray.sft import ensure_warm_start

    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"output_dir": str(out)})
    store = CheckpointStore.for_config(cfg)
    check_resume(cfg, store)  # before anything is written: a mismatch exits with one line
    (out / "config.yaml").write_text(dump_config(cfg))
    tracker = open_tracker(cfg, out, parent_run_id)
    watch = None
    try:
        connect_ray(cfg)  # before JAX starts its threads in this process: Ray forks helpers at start-up
        watch = watch_ray_head(store, storage_label(cfg, store), tracker) if watch_head else None
        init_dir = ensure_warm_start(cfg, tracker, train=sft_as_learner_task(cfg)).resolve()
        packed = pack_policy_dir(init_dir)
        init = ray.put(packed)
        # the rollout engines load while this process evaluates the starting policy
        group = RolloutGroup(cfg.rollout, init, cfg.training.seed, wait=False)
        try:
            before = baseline_eval(cfg, init_dir, packed_digest(packed), out)
            baseline = [(r.complexity, r.accuracy, r.n) for r in before]
            check_competence(cfg, before, tracker)
            fit_learner(cfg, init, tracker, report_to_tune, store, group, make_scorer(cfg, init_dir), baseline)
        finally:
            group.shutdown()
        result = finish_run(cfg, out, before, tracker, store)
    except BaseException:
        tracker.end("FAILED" if not isinstance(sys.exc_info()[1], KeyboardInterrupt) else "KILLED")
        raise
    finally:
        if watch is not None:
            watch.stop()  # before Ray shuts down at exit (a local head ends with this process)
    tracker.end("FINISHED")
    return result


def storage_label(cfg: RunConfig, store: CheckpointStore) -> str:
    """Where this run's checkpoints are, as the user wrote it (``s3://bucket/runs/NAME``, a local path)."""
    return f"{cfg.storage_uri.rstrip('/')}/{Path(cfg.output_dir).name}" if cfg.storage_uri else store.root


def watch_ray_head(store: CheckpointStore, where: str, tracker: Tracker) -> Any:
    """A started :class:`HeadWatch` on this driver's Ray head, naming the last checkpoint when the head is lost."""
    from rlvr_ray.cluster.head_watch import HeadWatch, head_lost_line

    def describe(silent_s: float) -> str:
        try:
            step = int((store.pointer() or {}).get("step", 0)) if store.latest() else None
        except Exception as err:  # storage unreachable too: say so, the line still comes out
            return head_lost_line(watch.gcs_address, silent_s, None, f"{where} (unreadable: {err})")
        return head_lost_line(watch.gcs_address, silent_s, step, where)

    watch: Any = HeadWatch.of_ray(describe, lambda: tracker.end("FAILED"))
    return watch  # None under Ray Client


def fetch_final(store: CheckpointStore, out: Path) -> tuple[Path, Path]:
    """The newest checkpoint from storage: its policy to ``OUTPUT_DIR/final_policy`` (swapped in whole), its ledger
    (what every trained step trained on) to ``OUTPUT_DIR/ledger.json``."""
    path = store.latest()
    if path is None:
        raise RuntimeError(f"the learner ended without a checkpoint in {store.root}")
    final, partial, ledger = out / "final_policy", out / "final_policy.partial", out / "ledger.json"
    with tempfile.TemporaryDirectory(prefix="rlvr_final_") as tmp:
        local = store.download(path, tmp)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(local / "policy", partial)
        loop = json.loads((local / LOOP_FILE).read_text())
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    ledger.write_text(json.dumps(loop["ledger"], indent=1))
    return final, ledger


def finish_run(cfg: RunConfig, out: Path, before: list[EvalRow], tracker: Tracker, store: CheckpointStore) -> RunResult:
    """Fetch the final policy from storage, evaluate it like ``python -m rlvr_ray.eval`` does, log the artifacts
    (the final policy as an MLflow artifact directory ``final_policy``, so ``mlflow artifacts download`` gets it)."""
    from rlvr_ray.eval import evaluate_policy_dir, format_table

    final, ledger = fetch_final(store, out)
    after = evaluate_policy_dir(str(final), cfg)
    (out / "eval_after.json").write_text(json.dumps([asdict(r) for r in after], indent=2))
    table = out / "eval_table.txt"
    table.write_text(format_table(before, "before") + "\n\n" + format_table(after, "after") + "\n")
    tracker.log_metrics(rows_to_metrics(after, "final"), cfg.training.total_steps)
    curves = plot_curves(tracker, out / "curves.png")
    for path in (table, out / "eval_before.json", out / "eval_after.json", out / "config.yaml", curves, ledger):
        tracker.log_artifact(path)
    tracker.log_artifact(final, "final_policy")
    paths = {
        "final policy": str(final),
        "eval table": str(table),
        "curves": str(curves),
        "checkpoints": store.root if cfg.storage_uri is None else f"{cfg.storage_uri} ({store.root})",
        "mlflow": f"{tracker.tracking_uri} (run {tracker.run_id}; final policy: artifact path final_policy)",
    }
    return RunResult(out, final, before, after, tracker.run_id, tracker.tracking_uri, paths)


def plot_curves(tracker: Tracker, path: Path) -> Path:
    """PNG of reward, training accuracy and held-out accuracy against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["reward/mean", "train/accuracy", "eval/accuracy", "mismatch/logprob_abs_diff"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        history: list[Any] = sorted(tracker.metric_history(key))
        if history:
            steps, values = zip(*history, strict=True)
            ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
