"""Checkpoints, persisted through Ray Train wherever ``storage_uri`` points (a local path, s3://, gs://, ...).

One checkpoint directory holds ``policy/`` (the HF policy), ``trainer_state.pt`` (optimizer, value head and the
learner's RNG: tensors and plain data only, loaded with ``weights_only=True``), ``loop.json`` (the whole
:class:`LoopState`) and ``fingerprint.json`` (the config fields that shape the trajectory, see
:func:`run_fingerprint`).

Storage layout (``STORE`` = ``OUTPUT_DIR/checkpoints`` by default, else ``STORAGE_URI/<output_dir name>``)::

    STORE/latest.json                  {"run": ..., "checkpoint": "step_000006", "step": 6}: the newest complete one
    STORE/<ray train run>/step_NNNNNN/  one Ray Train run per driver start (Ray keeps the newest 2 of each)

Learner rank 0 uploads through ``ray.train.report(..., checkpoint=...)`` and moves ``latest.json`` only once the
upload returned, so a run killed mid-upload never resumes from a half-written checkpoint. Everything here reads and
writes through ``pyarrow.fs``: no process needs a filesystem shared with another.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlvr_ray.config import RunConfig
from rlvr_ray.learner.learner import Learner
from rlvr_ray.policy import save_policy
from rlvr_ray.task.split import SPLIT_ID
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.tracking import flatten_params

if TYPE_CHECKING:
    import pyarrow.fs
    import ray.train

    from rlvr_ray.learner.worker import LearnerRank

STATE_FILE = "trainer_state.pt"
LOOP_FILE = "loop.json"
FINGERPRINT_FILE = "fingerprint.json"
POINTER_FILE = "latest.json"
KEEP_PER_RUN = 2

FREE_FIELDS = frozenset(
    {
        "training.num_epochs",
        "training.samples_per_epoch",
        "training.max_batches_per_epoch",
        "training.ppo_steps",
        "training.time_budget_s",
        "training.heldout_guard_z",
        "training.heldout_guard_action",
        "training.log_every",
        "training.eval_every",
        "training.checkpoint_every",
        "sft.log_every",
        "sft.num_threads",
    }
)
"""Run length, cadence and thread counts: free to change on resume (a longer run extends the old one)."""
IDENTITY_SECTIONS = ("generative_process.", "model.", "sft.", "training.")
IDENTITY_FIELDS = frozenset({"rollout.engine", "rollout.dtype", "rollout.num_actors", "learner.num_workers"})
"""Besides the sections above: engine numerics, the actor count (engine seeds derive from it), the DDP world size
(sharding). Not part of the identity: verifier (its rewards are pure functions of training.reward_*), sync, eval,
tracking, resources, thread counts, paths."""


@dataclass
class LoopState:
    """Where the loop is: the next step to run and the metrics history needed after a resume.

    ledger:   one record per trained step, in order (the lineage of the current weights): which prompts and how
              many samples of which behaviour versions it trained on; plain JSON data.
    inflight: rollouts already generated for later steps (the bounded-staleness pipeline), as plain JSON data, so a
              resume trains on exactly the samples an uninterrupted run would have.
    train_seconds: RL wall time spent so far, held-out eval and checkpointing excluded (``training.time_budget_s``
              counts it across resumes).
    restarts: how often the loop was started again from a checkpoint of this run (worker-group restarts by Ray
              Train after a failure, and resumes by a new driver).
    stop_reason: why the run ends before its step count (:mod:`rlvr_ray.guard`), set once that is decided: by the
              held-out guard one step before the last one, by the time budget at the last one.
    stopped:  the last step of such an early stop has run.
    guard_trips: held-out guard trips so far.
    guard_best: the best held-out eval so far as the guard sees it (``rlvr_ray.guard.HeldOut.to_json``); None
              before the first eval (the starting policy's is then the reference).
    """

    step: int = 0
    best_eval_accuracy: float = float("-inf")
    ledger: list[dict[str, Any]] = field(default_factory=list)
    inflight: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    restarts: int = 0
    stop_reason: str | None = None
    stopped: bool = False
    guard_trips: int = 0
    guard_best: dict[str, Any] | None = None


def run_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The config fields that shape the trajectory, flattened (``{"training.learning_rate": 3e-4, ...}``)."""
    flat = flatten_params(cfg.model_dump(mode="json"))
    keep = {
        k: v
        for k, v in flat.items()
        if (k.startswith(IDENTITY_SECTIONS) or k in IDENTITY_FIELDS) and k not in FREE_FIELDS
    }
    keep["split"] = SPLIT_ID  # the train/eval split decides the prompt stream
    return json.loads(json.dumps(keep))  # JSON-normal (tuples -> lists), as read back from a checkpoint


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: saved -> now"`` for every identity field that differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


# ----------------------------------------------------------------------------------------------------------------
# One checkpoint directory


def write_checkpoint(
    path: str | Path, learner: Learner, vocab: Vocab, state: LoopState, fingerprint: dict[str, Any] | None = None
) -> Path:
    """Write a complete checkpoint into the local directory ``path``."""
    out = Path(path)
    save_policy(learner.policy.policy, vocab, out / "policy")
    torch.save(
        {
            "optimizer": learner.optimizer.state_dict(),
            "value_head": None if learner.policy.value_head is None else learner.policy.value_head.state_dict(),
            "generator": learner.generator.get_state(),
        },
        out / STATE_FILE,
    )
    (out / LOOP_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    (out / FINGERPRINT_FILE).write_text(json.dumps(fingerprint or {}, indent=1, sort_keys=True))
    return out


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Tensors and plain data only (``weights_only=True``), plus the loop state under ``"loop"``."""
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    state["loop"] = json.loads((Path(path) / LOOP_FILE).read_text())
    return state


def restore_learner(learner: Learner, state: dict[str, Any]) -> LoopState:
    """Load optimizer, value head and RNG into ``learner`` (policy weights are loaded from the HF dir before)."""
    learner.optimizer.load_state_dict(state["optimizer"])
    if state["value_head"] is not None and learner.policy.value_head is not None:
        learner.policy.value_head.load_state_dict(state["value_head"])
    learner.generator.set_state(state["generator"])
    return LoopState(**state["loop"])


# ----------------------------------------------------------------------------------------------------------------
# Storage


class CheckpointStore:
    """The run's checkpoint storage (``STORE`` above), read and written through ``pyarrow.fs``."""

    def __init__(self, filesystem: pyarrow.fs.FileSystem, root: str) -> None:
        self.fs, self.root = filesystem, root.rstrip("/")

    @classmethod
    def for_config(cls, cfg: RunConfig) -> CheckpointStore:
        import pyarrow.fs

        uri = cfg.storage_uri or str(Path(cfg.output_dir).resolve())
        if "://" not in uri:
            uri = str(Path(uri).resolve())
        fs, base = pyarrow.fs.FileSystem.from_uri(uri)
        sub = Path(cfg.output_dir).name if cfg.storage_uri else "checkpoints"
        return cls(fs, f"{base.rstrip('/')}/{sub}")

    def read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def write_json(self, path: str, data: Any) -> None:
        """Write ``path`` whole: to a temporary name, then moved over it."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(data).encode())
        self.fs.move(tmp, path)

    def exists(self, path: str) -> bool:
        import pyarrow.fs

        return bool(self.fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound)

    def pointer(self) -> dict[str, Any] | None:
        path = f"{self.root}/{POINTER_FILE}"
        return self.read_json(path) if self.exists(path) else None

    def latest(self) -> str | None:
        """Storage path of the newest complete checkpoint of the current lineage, if any."""
        pointer = self.pointer()
        if not pointer or not pointer.get("checkpoint"):
            return None
        return f"{self.root}/{pointer['run']}/{pointer['checkpoint']}"

    def set_latest(
        self, run: str, checkpoint: str | None, step: int, train_s: float = 0.0, stopped: str | None = None
    ) -> None:
        """Point at the newest checkpoint; ``train_s`` and ``stopped`` (the reason of an early stop whose last step
        it holds) let a new driver say that the run is already finished without reading the checkpoint."""
        pointer = {"run": run, "checkpoint": checkpoint, "step": step, "train_s": train_s, "stopped": stopped}
        self.write_json(f"{self.root}/{POINTER_FILE}", pointer)

    def checkpoint(self, path: str) -> ray.train.Checkpoint:
        import ray.train

        return ray.train.Checkpoint(path, filesystem=self.fs)

    def download(self, path: str, local_dir: str | Path) -> Path:
        """Copy the checkpoint at storage ``path`` into the local directory ``local_dir``."""
        return Path(self.checkpoint(path).to_directory(str(local_dir)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint directory of a run whose storage is the default local ``OUTPUT_DIR/checkpoints``."""
    pointer = Path(output_dir) / "checkpoints" / POINTER_FILE
    if not pointer.is_file():
        return None
    data = json.loads(pointer.read_text())
    path = pointer.parent / str(data["run"]) / str(data["checkpoint"])
    return path if data.get("checkpoint") and (path / LOOP_FILE).is_file() else None


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def resume_checkpoint(cfg: RunConfig) -> ray.train.Checkpoint | None:
    """Inside a Ray Train worker: the checkpoint to start from. Ray Train's own after a worker-group restart, else
    (a new driver start, ``resume`` on) the newest one in storage."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None or not cfg.resume:
        return checkpoint
    store = CheckpointStore.for_config(cfg)
    path = store.latest()
    return store.checkpoint(path) if path is not None else None


def report_step(
    cfg: RunConfig, learner: LearnerRank, vocab: Vocab | None, state: LoopState, metrics: dict[str, Any], save: bool
) -> None:
    """Every rank calls this at each eval-or-checkpoint step (after ``state.step`` advanced): rank 0 reports
    ``metrics`` (plus step and best eval accuracy) and, when ``save``, a checkpoint of ``state``; others join."""
    import ray.train

    if learner.rank != 0:
        ray.train.report({})
        return
    metrics = {**metrics, "step": state.step, "best_eval_accuracy": state.best_eval_accuracy}
    if not save:
        ray.train.report(metrics)
        return
    assert vocab is not None, "rank 0 needs the vocab to save a checkpoint"
    name = checkpoint_name(state.step)
    with tempfile.TemporaryDirectory(prefix="rlvr_ckpt_", ignore_cleanup_errors=True) as tmp:
        write_checkpoint(tmp, learner.learner, vocab, state, run_fingerprint(cfg))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
    stopped = state.stop_reason if state.stopped else None
    CheckpointStore.for_config(cfg).set_latest(
        ray.train.get_context().get_experiment_name(), name, state.step, state.train_seconds, stopped
    )
