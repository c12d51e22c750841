"""push_weights over the Ray object store on a real local cluster: versions, one put, deadline, loud failures.

Actor 1 of the module's pair is a FaultyWorker (defined here, shipped to the actor by value): a test switches it
to hang or to acknowledge a wrong version, and switches it back.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from ray import cloudpickle

from rlvr_ray.config import ModelConfig, RolloutConfig
from rlvr_ray.policy import build_model, load_policy, save_policy
from rlvr_ray.rollout.actor import RolloutActor, RolloutWorker
from rlvr_ray.rollout.torch_engine import TorchEngine
from rlvr_ray.sync import object_store
from rlvr_ray.sync.object_store import WeightSyncError, WeightSyncTimeout, push_weights
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import SamplingSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CFG = RolloutConfig(num_cpus=0.5)
HANG_S = 8.0
VERSIONS = itertools.count(1)
PROMPTS = [[17, 3, 4, 13], [17, 5], [17, 1, 2, 3, 14, 6, 15]]
SPEC = SamplingSpec(n=2, max_tokens=10, stop_token_id=18, seed=4)


class FaultyWorker(RolloutWorker):
    """A rollout worker whose weight update can be made to hang past a deadline or to acknowledge a wrong version."""

    fault: str | None = None

    def set_fault(self, fault: str | None) -> None:
        self.fault = fault

    def update_weights(self, state: Any, version: int) -> int:
        if self.fault == "hang":
            time.sleep(HANG_S)
        acknowledged = super().update_weights(state, version)
        return acknowledged - 1 if self.fault == "lag" else acknowledged


def _policy(out_dir: Path, seed: int) -> str:
    vocab = Vocab(13, ("+", "-", "*"))
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), vocab, seed)
    return str(save_policy(model, vocab, out_dir))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the box is shared: 2 cores for several engineers


@pytest.fixture(scope="module")
def sync_policy_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(initial policy, the 'trained' policy the learner pushes)."""
    return _policy(tmp_path_factory.mktemp("sync_a"), 0), _policy(tmp_path_factory.mktemp("sync_b"), 1)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def actors(sync_policy_dirs: tuple[str, str]) -> Iterator[list[Any]]:
    start_dir = sync_policy_dirs[0]
    pair = [
        RolloutActor.options(num_cpus=0.5).remote(CFG, start_dir, 0),
        ray.remote(FaultyWorker).options(num_cpus=0.5).remote(CFG, start_dir, 1),
    ]
    ray.get([a.ready.remote() for a in pair], timeout=600)
    yield pair
    for actor in pair:
        ray.kill(actor)


@pytest.fixture
def fault(actors: list[Any]) -> Iterator[Any]:
    """Set a fault on actor 1 for one test; cleared (after any hang has passed) at teardown."""
    yield lambda name: ray.get(actors[1].set_fault.remote(name))
    ray.get(actors[1].set_fault.remote(None), timeout=120)


def test_push_advances_every_actor_and_generations_follow(actors: list[Any], sync_policy_dirs: tuple[str, str]) -> None:
    trained_dir = sync_policy_dirs[1]
    version = next(VERSIONS)
    ref = push_weights(actors, load_policy(trained_dir).state_dict(), version, deadline_s=120)
    assert ray.get([a.version.remote() for a in actors]) == [version, version]
    stored = ray.get(ref).tensors()
    for name, tensor in load_policy(trained_dir).state_dict().items():
        assert torch.equal(stored[name], tensor)
    expected = [c.token_ids for c in TorchEngine(trained_dir).generate(PROMPTS, SPEC)]
    for actor in actors:
        completions, generated_version, seconds = ray.get(actor.generate.remote(PROMPTS, SPEC))
        assert [c.token_ids for c in completions] == expected
        assert generated_version == version and seconds > 0


def test_push_puts_one_contiguous_cpu_copy(
    actors: list[Any], sync_policy_dirs: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = load_policy(sync_policy_dirs[0]).state_dict()
    square = next(name for name, t in state.items() if t.dim() == 2 and t.shape[0] == t.shape[1])
    state[square] = state[square].t().contiguous().t()  # same values, transposed strides
    assert not state[square].is_contiguous()
    puts: list[object] = []
    real_put = ray.put

    def counting_put(value: object) -> Any:
        puts.append(value)
        return real_put(value)

    monkeypatch.setattr(object_store.ray, "put", counting_put)
    ref = push_weights(actors, state, next(VERSIONS), deadline_s=120)
    assert len(puts) == 1
    stored = ray.get(ref).tensors()
    assert stored[square].is_contiguous() and torch.equal(stored[square], state[square])


def test_hanging_actor_raises_timeout_naming_it(actors: list[Any], sync_policy_dirs: tuple[str, str], fault) -> None:
    fault("hang")
    version = next(VERSIONS)
    started = time.monotonic()
    with pytest.raises(WeightSyncTimeout) as caught:
        push_weights(actors, load_policy(sync_policy_dirs[0]).state_dict(), version, deadline_s=2.0)
    assert time.monotonic() - started < HANG_S
    message = str(caught.value)
    assert f"weight sync to version {version}: 1 of 2 rollout actors did not acknowledge" in message
    assert "sync.deadline_s=2s" in message
    assert "actor 1 (" in message and "actor 0 (" not in message
    assert isinstance(caught.value, TimeoutError)


def test_wrong_acknowledged_version_raises(actors: list[Any], sync_policy_dirs: tuple[str, str], fault) -> None:
    fault("lag")
    version = next(VERSIONS)
    with pytest.raises(WeightSyncError, match=rf"actor 1 \(\w+\) reports version {version - 1}"):
        push_weights(actors, load_policy(sync_policy_dirs[0]).state_dict(), version, deadline_s=120)


def test_dead_actor_raises_and_is_named(actors: list[Any], sync_policy_dirs: tuple[str, str]) -> None:
    doomed = RolloutActor.options(num_cpus=0.5).remote(CFG, sync_policy_dirs[0], 2)
    ray.get(doomed.ready.remote(), timeout=600)
    ray.kill(doomed)
    with pytest.raises(WeightSyncError, match=r"actor 1 \(\w+\) died") as caught:
        push_weights([actors[0], doomed], load_policy(sync_policy_dirs[0]).state_dict(), next(VERSIONS), 120)
    assert caught.value.died == [1]
    assert not isinstance(caught.value, WeightSyncTimeout)
