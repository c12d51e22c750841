"""NcclWeightBroadcaster for real on CPU: the ``gloo`` collective between this process (learner rank 0) and real Ray
actors, so its membership, rejoin-after-respawn, deadline and acknowledgement logic run with a real broadcast.

The actors here implement ``nccl_join`` / ``nccl_receive`` like ``RolloutWorker`` does, but on gloo and without a vLLM
engine (``join_weight_group("gloo", ...)`` + ``receive_weights``). What cannot run without a GPU is NOT tested: the
``nccl`` collective (vLLM's PyNcclCommunicator), the vLLM worker extension and ``engine_join`` / ``engine_receive``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import torch
from ray import cloudpickle

from rlvr_ray.sync.nccl import NcclWeightBroadcaster, free_port, join_weight_group, receive_weights
from rlvr_ray.sync.object_store import WeightSyncError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DEADLINE_S = 20.0
RECEIVE_TIMEOUT_S = 6.0


class GlooEngine:
    """A stand-in rollout actor: joins the weight group on gloo and keeps what it receives, with its version."""

    def __init__(self) -> None:
        self.group: Any = None
        self.weights: dict[str, torch.Tensor] = {}
        self._version = 0

    def nccl_join(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> None:
        # A receive left waiting by a failed push gives up after RECEIVE_TIMEOUT_S (then this actor can rejoin).
        self.group = join_weight_group("gloo", master_address, master_port, rank_offset, world_size, None,
                                       RECEIVE_TIMEOUT_S)  # fmt: skip

    def nccl_receive(self, meta: list[tuple[str, str, tuple[int, ...]]], version: int) -> int:
        self.weights = dict(receive_weights(self.group, meta, torch.device("cpu")))
        self._version = version
        return version

    def version(self) -> int:
        return self._version

    def state(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self._version, self.weights


Engine = ray.remote(num_cpus=0.1)(GlooEngine)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors get GlooEngine by value
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"embed.weight": torch.randn(19, 8, generator=generator), "head.bias": torch.randn(19, generator=generator),
            "norm.weight": torch.randn(8, generator=generator).to(torch.bfloat16)}  # fmt: skip


def assert_hold(actors: list[Any], version: int, expected: dict[str, torch.Tensor]) -> None:
    for index, (got_version, got) in enumerate(ray.get([a.state.remote() for a in actors])):
        assert got_version == version, f"actor {index} at version {got_version}, expected {version}"
        assert list(got) == list(expected)
        for name, tensor in expected.items():
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), f"actor {index}: {name}"


def broadcaster(actors: list[Any]) -> NcclWeightBroadcaster:
    return NcclWeightBroadcaster(actors, "127.0.0.1", free_port("127.0.0.1"), DEADLINE_S, backend="gloo")


def test_push_broadcasts_every_tensor_and_version_to_every_actor() -> None:
    actors = [Engine.remote() for _ in range(2)]
    sender = broadcaster(actors)
    for version in (1, 2):
        sender.push(weights(version), version)
        assert_hold(actors, version, weights(version))
    assert sender.rejoins == 0


def test_respawned_actor_rejoins_and_gets_the_current_version() -> None:
    actors = [Engine.remote() for _ in range(2)]  # the group's live list: replacements land in it in place
    sender = broadcaster(actors)
    sender.push(weights(1), 1)
    ray.kill(actors[1], no_restart=True)
    actors[1] = Engine.remote()  # what RolloutGroup._replace does; the new engine starts at version 0
    assert ray.get(actors[1].version.remote()) == 0
    assert sender.catch_up()  # brings it to the last pushed version at once, without a new push
    assert_hold(actors, 1, weights(1))
    sender.push(weights(2), 2)
    assert_hold(actors, 2, weights(2))
    assert sender.rejoins == 1
    assert not sender.catch_up()  # nothing changed since


def test_dead_actor_fails_the_push_loudly_then_a_replacement_recovers() -> None:
    actors = [Engine.remote() for _ in range(2)]
    sender = broadcaster(actors)
    sender.push(weights(1), 1)
    ray.kill(actors[0], no_restart=True)
    with pytest.raises(WeightSyncError) as failed:
        sender.push(weights(2), 2)  # the handle of a dead actor, not yet replaced
    assert "0" in str(failed.value)
    actors[0] = Engine.remote()
    sender.push(weights(3), 3)
    assert_hold(actors, 3, weights(3))


def test_importing_the_module_pulls_in_neither_torch_nor_vllm() -> None:
    code = "import sys, rlvr_ray.sync.nccl; print(sorted(m for m in ('torch', 'vllm') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
