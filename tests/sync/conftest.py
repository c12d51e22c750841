"""Fixtures of the weight-sync tests: two tiny saved policies (different seeds) and the thread cap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr_ray.config import ModelConfig
from rlvr_ray.policy import build_model, save_policy
from rlvr_ray.task.vocab import Vocab

SYNC_VOCAB = Vocab(13, ("+", "-", "*"))


def _policy(out_dir: Path, seed: int) -> str:
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), SYNC_VOCAB, seed)
    return str(save_policy(model, SYNC_VOCAB, out_dir))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the box is shared: 2 cores for several engineers


@pytest.fixture(scope="session")
def sync_policy_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(initial policy, the 'trained' policy the learner pushes)."""
    return _policy(tmp_path_factory.mktemp("sync_a"), 0), _policy(tmp_path_factory.mktemp("sync_b"), 1)
