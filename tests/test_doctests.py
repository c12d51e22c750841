"""Every docstring example in the package runs, except those that start Ray: RolloutGroup's form one session
and run in order in tests/rollout/test_rollout_group.py, VerifierPool's in tests/verify/test_pool.py.
Examples marked ``+SKIP`` need a cluster or a trained policy."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rlvr_ray

STARTS_RAY = ("rlvr_ray.rollout.actor", "rlvr_ray.verify.pool")
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(rlvr_ray.__path__, "rlvr_ray.")
    if not info.name.endswith("__main__") and info.name not in STARTS_RAY
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    import ray

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert not ray.is_initialized(), f"an example in {name} started Ray: list the module in STARTS_RAY"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
