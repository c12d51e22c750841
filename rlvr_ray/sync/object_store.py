"""Weight sync through the Ray object store: put the state dict once, every rollout actor loads it in place.

Works on any cluster (CPU or GPU, one node or many): Ray moves the ~8 MB of a 2M-parameter fp32 policy to each
node once, and actors on the same node share it through shared memory. The contract (also kept by
:mod:`rlvr_ray.sync.nccl`):

- every actor gets ``update_weights(weights, version)`` and must acknowledge by returning ``version``;
- not all acknowledgements within ``deadline_s`` -> :class:`WeightSyncTimeout` naming the silent actors;
- an actor that died or acknowledged another version -> :class:`WeightSyncError` naming it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError

if TYPE_CHECKING:
    import torch


class WeightSyncError(RuntimeError):
    """Some rollout actors did not end up on the pushed version; ``died`` lists the indices of dead ones."""

    def __init__(self, message: str, died: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.died = list(died)


class WeightSyncTimeout(WeightSyncError, TimeoutError):
    """Not every rollout actor acknowledged the new weights within the deadline."""


def put_weights(state_dict: Mapping[str, torch.Tensor]) -> ray.ObjectRef:
    """Store the state dict (detached, CPU, contiguous) in the object store once; returns its ref."""
    return ray.put({name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()})


def push_weights(
    actors: Sequence[Any], state_dict: Mapping[str, torch.Tensor], version: int, deadline_s: float
) -> ray.ObjectRef:
    """Put ``state_dict`` once and make every actor load it as ``version``, within ``deadline_s`` seconds.

    Returns the weights' ObjectRef (keep it to bring a respawned actor up to date).

    >>> ref = push_weights(group.actors, model.state_dict(), version=3, deadline_s=60)  # doctest: +SKIP
    """
    ref = put_weights(state_dict)
    send_weights(actors, ref, version, deadline_s)
    return ref


def send_weights(actors: Sequence[Any], weights: ray.ObjectRef, version: int, deadline_s: float) -> None:
    """Ask every actor to load the stored ``weights`` as ``version`` and check each acknowledgement."""
    started = time.monotonic()
    acks = {actor.update_weights.remote(weights, version): index for index, actor in enumerate(actors)}
    done, silent = ray.wait(list(acks), num_returns=len(acks), timeout=deadline_s)
    if silent:
        names = ", ".join(_describe(actors[acks[ref]], acks[ref]) for ref in silent)
        raise WeightSyncTimeout(
            f"weight sync to version {version}: {len(silent)} of {len(actors)} rollout actors did not acknowledge "
            f"within sync.deadline_s={deadline_s:g}s (waited {time.monotonic() - started:.1f}s): {names}"
        )
    died, wrong = [], []
    for ref in done:
        index = acks[ref]
        try:
            acknowledged = ray.get(ref)
        except RayActorError:
            died.append(index)
            continue
        if acknowledged != version:
            wrong.append(f"{_describe(actors[index], index)} reports version {acknowledged}")
    if died or wrong:
        dead = [_describe(actors[i], i) + " died" for i in sorted(died)]
        raise WeightSyncError(f"weight sync to version {version} failed: {'; '.join(dead + wrong)}", died=sorted(died))


def _describe(actor: Any, index: int) -> str:
    actor_id = getattr(actor, "_actor_id", None)
    return f"actor {index} ({actor_id.hex()[:12]})" if actor_id is not None else f"actor {index}"
