"""Choose the weight-sync path from ``SyncConfig``: one callable ``push(state_dict, version)`` for the controller."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rlvr_ray.config import SyncConfig

if TYPE_CHECKING:
    import torch

    from rlvr_ray.rollout.actor import RolloutGroup

WeightPush = Callable[["Mapping[str, torch.Tensor]", int], None]


def make_weight_push(cfg: SyncConfig, group: RolloutGroup) -> WeightPush:
    """``object_store``: through the Ray object store (any cluster, CPU or GPU).
    ``nccl``: a broadcast from this GPU process (learner rank 0) into the engines (see rlvr_ray.sync.nccl)."""
    if cfg.backend == "object_store":
        return lambda state, version: group.sync(state, version, cfg.deadline_s)
    if cfg.backend == "nccl":
        import ray

        from rlvr_ray.sync.nccl import NcclWeightBroadcaster

        address = ray.util.get_node_ip_address()
        broadcaster = NcclWeightBroadcaster(group.actors, address, _free_port(address), cfg.deadline_s)
        group.on_respawn = broadcaster.catch_up  # a respawned engine rejoins and gets the current version at once
        return broadcaster.push
    raise ValueError(f"sync.backend {cfg.backend!r} is not one of: object_store, nccl")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
