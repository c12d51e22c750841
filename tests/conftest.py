"""Shared by the end-to-end tests: one SFT warm-start directory for the whole session.

A warm start is stored under a key of the task, model and SFT config (``rlvr_ray.sft``), so tests with the same
config reuse the policy the first of them trained, and a test with another SFT config trains and keeps its own
beside it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def warm_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm") / "warm_start"
