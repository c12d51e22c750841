"""Weight sync through the Ray object store: put the state dict once, every rollout actor loads it in place.

Works on any cluster (CPU or GPU, one node or many): Ray moves the ~8 MB of a 2M-parameter fp32 policy to each
node once, and actors on the same node share it through shared memory. The contract (also kept by
:mod:`rlvr_ray.sync.nccl`):

- every actor gets ``update_weights(weights, version)`` and must acknowledge by returning ``version``;
- not all acknowledgements within ``deadline_s`` -> :class:`WeightSyncTimeout` naming the silent actors;
- an actor that died or acknowledged another version -> :class:`WeightSyncError` naming it.

The weights travel as :class:`StoredWeights`, flat byte arrays: Ray keeps numpy buffers out of band (one copy in,
read in place out), where a dict of torch tensors goes through pickle. For the ~4 MB policy of the default config,
put and load each took about 2.5x less time this way on the 2-core box (docs/results.md), and in a pipelined step
the load sits between two generations.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError

if TYPE_CHECKING:
    import numpy as np
    import torch


class WeightSyncError(RuntimeError):
    """Some rollout actors did not end up on the pushed version; ``died`` lists the indices of dead ones."""

    def __init__(self, message: str, died: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.died = list(died)


class WeightSyncTimeout(WeightSyncError, TimeoutError):
    """Not every rollout actor acknowledged the new weights within the deadline."""


@dataclass(frozen=True)
class StoredWeights:
    """A copy of a state dict as the object store keeps it: each tensor's bytes (flat uint8), dtype and shape.

    Bytes rather than typed arrays, so dtypes numpy lacks (bfloat16) travel the same way.

    >>> import torch
    >>> state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(2.5, dtype=torch.bfloat16)}
    >>> back = StoredWeights.from_tensors(state).tensors()
    >>> [(name, t.dtype, tuple(t.shape), torch.equal(t, state[name])) for name, t in back.items()]
    [('w', torch.float32, (2, 3), True), ('b', torch.bfloat16, (), True)]
    """

    data: dict[str, np.ndarray]
    dtypes: dict[str, torch.dtype]
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def from_tensors(cls, state_dict: Mapping[str, torch.Tensor]) -> StoredWeights:
        import torch

        data, dtypes, shapes = {}, {}, {}
        for name, tensor in state_dict.items():
            flat = tensor.detach().reshape(-1).to("cpu", copy=True)  # its own bytes: the source trains on
            data[name] = flat.view(torch.uint8).numpy()
            dtypes[name], shapes[name] = flat.dtype, tuple(tensor.shape)
        return cls(data, dtypes, shapes)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors, reading the stored bytes in place (copy them before writing: the store's are read-only)."""
        import torch

        with warnings.catch_warnings():  # torch warns that the store's buffers are read-only; they are only read
            warnings.simplefilter("ignore", UserWarning)
            return {
                name: torch.from_numpy(array).view(self.dtypes[name]).reshape(self.shapes[name])
                for name, array in self.data.items()
            }


def put_weights(state_dict: Mapping[str, torch.Tensor]) -> ray.ObjectRef:
    """Store the state dict (detached, CPU, contiguous, as :class:`StoredWeights`) once; returns its ref."""
    return ray.put(StoredWeights.from_tensors(state_dict))


def as_tensors(weights: Mapping[str, torch.Tensor] | StoredWeights) -> Mapping[str, torch.Tensor]:
    """What an engine loads, from what an actor was handed: stored weights or a plain state dict."""
    return weights.tensors() if isinstance(weights, StoredWeights) else weights


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
