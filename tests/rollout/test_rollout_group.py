"""RolloutGroup on a real local Ray cluster (torch engines): split and gather, sync, respawn, loud failures.

Faulty actors are subclasses of RolloutWorker defined here; the module is shipped to the actors by value, since
tests/ is not on their import path.
"""

from __future__ import annotations

import doctest
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from ray import cloudpickle
from rollout_testkit import VOCAB, hf_greedy, mixed_prompts

import rlvr_ray.rollout.actor as actor_module
from rlvr_ray.config import RolloutConfig
from rlvr_ray.policy import load_policy
from rlvr_ray.rollout.actor import RolloutError, RolloutGroup, RolloutWorker
from rlvr_ray.types import PromptBatch, SamplingSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CFG = RolloutConfig(num_actors=2, num_cpus=0.5, generate_timeout_s=120)
GREEDY = SamplingSpec(n=2, max_tokens=12, stop_token_id=VOCAB.eoe, greedy=True)
VERSIONS = itertools.count(1)  # the module's group only ever moves forward


class DyingWorker(RolloutWorker):
    """Its process exits in every generate call."""

    def generate(self, prompts, spec):  # type: ignore[no-untyped-def]
        os._exit(1)


class StuckWorker(RolloutWorker):
    """Never finishes a generate call (in any reasonable time)."""

    def generate(self, prompts, spec):  # type: ignore[no-untyped-def]
        time.sleep(300)
        return super().generate(prompts, spec)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def group(policy_dir: str) -> Iterator[RolloutGroup]:
    """One group for the module (actors start slowly on a busy box); tests that push other weights restore them."""
    rollout_group = RolloutGroup(CFG, policy_dir, seed=0)
    yield rollout_group
    rollout_group.shutdown()


@pytest.fixture
def restore_policy(group: RolloutGroup, policy_dir: str) -> Iterator[None]:
    yield
    group.sync(load_policy(policy_dir).state_dict(), version=next(VERSIONS))


def prompt_batch(count: int, seed: int) -> PromptBatch:
    return PromptBatch(mixed_prompts(count, seed=seed), np.arange(count) * 10, np.arange(count) % 4 + 1)


def test_generate_keeps_prompt_major_order_across_actors(group: RolloutGroup, policy_dir: str) -> None:
    prompts = prompt_batch(5, seed=30)  # shares of 3 and 2 prompts
    batch = group.generate(prompts, SamplingSpec(n=3, max_tokens=12, stop_token_id=VOCAB.eoe, seed=1))
    assert len(batch) == 15
    assert batch.group_ids.tolist() == [g for g in range(5) for _ in range(3)]
    assert batch.answers.tolist() == [10 * g for g in range(5) for _ in range(3)]
    assert batch.complexities.tolist() == [g % 4 + 1 for g in range(5) for _ in range(3)]
    assert batch.prompt_ids == [prompts.prompt_ids[g] for g in batch.group_ids]
    assert batch.policy_version.tolist() == group.versions()[:1] * 15
    assert [len(lp) for lp in batch.logprobs] == [len(c) for c in batch.completion_ids]
    assert batch.generate_seconds > 0
    greedy = group.generate(prompts, GREEDY)
    assert greedy.completion_ids == [c for c in hf_greedy(policy_dir, prompts.prompt_ids, 12) for _ in range(2)]


def test_more_actors_than_prompts(group: RolloutGroup) -> None:
    batch = group.generate(prompt_batch(1, seed=31), GREEDY)
    assert batch.group_ids.tolist() == [0, 0]


@pytest.mark.usefixtures("restore_policy")
def test_sync_advances_versions_and_generations_follow(group: RolloutGroup, other_policy_dir: str) -> None:
    version = next(VERSIONS)
    group.sync(load_policy(other_policy_dir).state_dict(), version=version)
    assert group.versions() == [version, version]
    prompts = prompt_batch(6, seed=32)
    batch = group.generate(prompts, GREEDY)
    assert batch.policy_version.tolist() == [version] * 12
    assert batch.completion_ids == [c for c in hf_greedy(other_policy_dir, prompts.prompt_ids, 12) for _ in range(2)]


@pytest.mark.usefixtures("restore_policy")
def test_killed_actor_is_respawned_with_latest_weights(group: RolloutGroup, other_policy_dir: str) -> None:
    version = next(VERSIONS)
    group.sync(load_policy(other_policy_dir).state_dict(), version=version)
    victim = group.actors[1]
    ray.kill(victim)
    prompts = prompt_batch(6, seed=33)
    batch = group.generate(prompts, GREEDY)
    assert group.actors[1] is not victim
    assert batch.group_ids.tolist() == [g for g in range(6) for _ in range(2)]
    assert batch.policy_version.tolist() == [version] * 12
    assert batch.completion_ids == [c for c in hf_greedy(other_policy_dir, prompts.prompt_ids, 12) for _ in range(2)]
    assert group.versions() == [version, version]


@pytest.mark.usefixtures("restore_policy")
def test_sync_replaces_an_actor_found_dead(group: RolloutGroup, other_policy_dir: str) -> None:
    victim = group.actors[0]
    ray.kill(victim)
    version = next(VERSIONS)
    group.sync(load_policy(other_policy_dir).state_dict(), version=version)
    assert group.actors[0] is not victim
    assert group.versions() == [version, version]


def test_without_object_store_weights_a_respawn_calls_on_respawn_before_the_retry(
    policy_dir: str, other_policy_dir: str
) -> None:
    """The NCCL path: no weights in the object store, so the group asks the broadcaster (``on_respawn``) to bring
    the new engine up to date; it runs before the share is re-generated, and the respawn is counted."""
    fresh = RolloutGroup(CFG.model_copy(update={"num_actors": 1}), policy_dir, seed=0)
    calls: list[int] = []

    def catch_up() -> None:  # stands in for NcclWeightBroadcaster.catch_up: load the current weights, version 7
        calls.append(1)
        fresh.actors[0].update_weights.remote(load_policy(other_policy_dir).state_dict(), 7)

    fresh.on_respawn = catch_up
    try:
        ray.kill(fresh.actors[0])
        prompts = prompt_batch(4, seed=36)
        batch = fresh.generate(prompts, GREEDY)
        assert calls == [1] and fresh.respawns == 1
        assert batch.policy_version.tolist() == [7] * 8
        expected = hf_greedy(other_policy_dir, prompts.prompt_ids, 12)
        assert batch.completion_ids == [c for c in expected for _ in range(2)]
    finally:
        fresh.shutdown()


def test_actor_dying_on_every_attempt_fails_loudly(policy_dir: str) -> None:
    one_actor = CFG.model_copy(update={"num_actors": 1})
    dying = RolloutGroup(one_actor, policy_dir, seed=0, actor_class=ray.remote(DyingWorker))
    try:
        with pytest.raises(RolloutError, match=r"died 2 times generating prompts \d+:\d+"):
            dying.generate(prompt_batch(4, seed=34), GREEDY)
    finally:
        dying.shutdown()


def test_generate_past_the_timeout_fails_loudly_and_replaces_the_actor(policy_dir: str) -> None:
    cfg = CFG.model_copy(update={"generate_timeout_s": 3.0, "num_actors": 1})
    stuck = RolloutGroup(cfg, policy_dir, seed=0, actor_class=ray.remote(StuckWorker))
    before = stuck.actors[0]
    started = time.monotonic()
    try:
        with pytest.raises(RolloutError, match=r"within rollout.generate_timeout_s=3s: actor 0 \(prompts 0:4\)"):
            stuck.generate(prompt_batch(4, seed=35), GREEDY)
        assert time.monotonic() - started < 60
        assert stuck.actors[0] is not before
    finally:
        stuck.shutdown()


def test_node_ids_name_the_local_node(group: RolloutGroup) -> None:
    assert group.node_ids() == [ray.get_runtime_context().get_node_id()] * 2


def test_docstring_examples_run_in_order() -> None:
    """The class and method examples of RolloutGroup form one session; run them in source order."""
    finder = doctest.DocTestFinder()
    examples = sorted(
        (
            t
            for t in finder.find(actor_module)
            if t.name.startswith("rlvr_ray.rollout.actor.RolloutGroup") and t.examples
        ),
        key=lambda t: t.lineno or 0,
    )
    assert [t.name.rsplit(".", 1)[-1] for t in examples] == [
        "RolloutGroup",
        "generate",
        "sync",
        "versions",
        "node_ids",
        "shutdown",
    ]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    shared: dict = {}
    for test in examples:
        test.globs = {**vars(actor_module), **shared}
        runner.run(test, clear_globs=False)
        shared.update(test.globs)
    assert runner.failures == 0


def gated_worker(gate: str) -> type:
    """A RolloutWorker whose constructor waits until the file ``gate`` exists."""

    class GatedWorker(RolloutWorker):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            while not os.path.exists(gate):
                time.sleep(0.05)
            super().__init__(*args, **kwargs)

    return GatedWorker


def test_a_group_started_without_waiting_returns_while_its_engines_load(policy_dir: str, tmp_path: Path) -> None:
    """``wait=False`` (the driver evaluates the starting policy meanwhile): the constructor returns with the actors
    still starting, and ``wait_ready`` blocks until they are up."""
    gate = tmp_path / "gate"
    starting = RolloutGroup(CFG, policy_dir, seed=0, actor_class=ray.remote(gated_worker(str(gate))), wait=False)
    try:
        ready = [actor.ready.remote() for actor in starting.actors]
        assert ray.wait(ready, num_returns=len(ready), timeout=1.0)[0] == []  # gated: none can be up yet
        gate.touch()
        starting.wait_ready()
        assert starting.versions() == [0, 0]
    finally:
        starting.shutdown()
