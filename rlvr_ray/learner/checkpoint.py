"""Checkpoints: ``OUTPUT_DIR/checkpoints/step_N/`` = HF policy directory + ``trainer_state.pt`` (optimizer, value
head, RNG, loop state). Written to a temporary name and renamed, so a run killed mid-write never resumes from a
half-written checkpoint; ``latest`` names the newest complete one.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr_ray.learner.learner import Learner
from rlvr_ray.policy import save_policy
from rlvr_ray.task.vocab import Vocab

STATE_FILE = "trainer_state.pt"


@dataclass
class LoopState:
    """Where the loop is: the next step to run and the metrics history needed after a resume.

    ledger:   one record per trained step, in order (the lineage of the current weights): which prompts and how
              many samples of which behaviour versions it trained on; plain JSON data.
    inflight: rollouts already generated for later steps (the bounded-staleness pipeline), as plain JSON data, so a
              resume trains on exactly the samples an uninterrupted run would have.
    train_seconds: RL wall time spent so far (for ``training.time_budget_s`` across resumes).
    """

    step: int = 0
    best_eval_accuracy: float = float("-inf")
    ledger: list[dict[str, Any]] = field(default_factory=list)
    inflight: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(output_dir: str | Path, learner: Learner, vocab: Vocab, state: LoopState, keep: int = 2) -> Path:
    """Write step ``state.step``'s checkpoint, point ``latest`` at it, keep the newest ``keep``."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{state.step:06d}"
    tmp = root / f".tmp_step_{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(learner.policy.policy, vocab, tmp / "policy")
    torch.save(
        {
            "optimizer": learner.optimizer.state_dict(),
            "value_head": None if learner.policy.value_head is None else learner.policy.value_head.state_dict(),
            "generator": learner.generator.get_state(),
            "loop": dataclasses.asdict(state),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / "latest").write_text(final.name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    pointer = checkpoint_root(output_dir) / "latest"
    if not pointer.is_file():
        return None
    path = checkpoint_root(output_dir) / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def load_trainer_state(path: Path) -> dict[str, Any]:
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def restore_learner(learner: Learner, state: dict[str, Any]) -> LoopState:
    """Load optimizer, value head and RNG into ``learner`` (policy weights are loaded from the HF dir before)."""
    learner.optimizer.load_state_dict(state["optimizer"])
    if state["value_head"] is not None and learner.policy.value_head is not None:
        learner.policy.value_head.load_state_dict(state["value_head"])
    learner.generator.set_state(state["generator"])
    return LoopState(**state["loop"])
