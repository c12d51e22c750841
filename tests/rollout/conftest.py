"""Fixtures of the rollout tests (helpers live in rollout_testkit.py)."""

from __future__ import annotations

import pytest
import torch
from rollout_testkit import make_policy


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the box is shared: 2 cores for several engineers


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_policy(tmp_path_factory.mktemp("policy_a"), seed=0)


@pytest.fixture(scope="session")
def other_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_policy(tmp_path_factory.mktemp("policy_b"), seed=1)
