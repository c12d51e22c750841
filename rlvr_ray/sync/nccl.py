"""Weight sync over NCCL: learner rank 0 broadcasts every tensor straight into the vLLM engines' GPU memory.

UNTESTED HERE: this project's machines have no GPU, so nothing in this module has ever run. It is written after
vLLM's own RLHF examples (``examples/offline_inference/rlhf.py`` / ``rlhf_utils.py``: a ``StatelessProcessGroup``
rendezvous, a ``PyNcclCommunicator`` over it, broadcast from the trainer at rank 0, the worker loading what it
received) and checked only for importing on CPU (every vLLM / CUDA import is inside a function) and by mypy.

Pieces, and where they run:

- :class:`NcclWeightReceiver` -- a vLLM *worker extension*: ``VllmEngine`` always passes
  ``worker_extension_cls="rlvr_ray.sync.nccl.NcclWeightReceiver"``, which mixes these methods into vLLM's worker
  (harmless on CPU, where they are never called). Method names carry an ``rlvr_`` prefix so they never collide
  with vLLM's own worker methods.
- :func:`engine_join` / :func:`engine_receive` -- called by ``RolloutWorker.nccl_join`` / ``nccl_receive`` in
  the rollout actor; they reach the worker through ``LLM.collective_rpc``.
- :class:`NcclWeightBroadcaster` -- created on learner rank 0 (a GPU process) with the rollout actor handles;
  ``push(state_dict, version)`` is the NCCL twin of :func:`rlvr_ray.sync.object_store.push_weights`.

Contract, same as the object-store path: every actor acknowledges ``version`` or :class:`WeightSyncTimeout` names
the ones that did not within ``deadline_s``. NCCL collectives have no timeout of their own and hang if a peer is
gone, so the broadcast runs in a helper thread and the deadline is enforced around it; after a timeout the
communicator is in an unknown state and the broadcaster refuses further pushes (make a new one).

Assumptions: one GPU worker per engine (tensor parallel size 1, what ``RolloutConfig`` describes), so NCCL rank
``1 + i`` is actor ``i``; the group's world size is fixed, so a respawned rollout actor needs a new broadcaster
(until then, ``RolloutGroup`` brings it up to date through the object store).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray

from rlvr_ray.sync.object_store import WeightSyncError, WeightSyncTimeout

if TYPE_CHECKING:
    import torch

TensorMeta = tuple[str, str, tuple[int, ...]]
"""(HF parameter name, torch dtype name e.g. ``float32``, shape) of one broadcast tensor, in broadcast order."""

EXTENSION_CLASS = "rlvr_ray.sync.nccl.NcclWeightReceiver"


def _communicator(master_address: str, master_port: int, rank: int, world_size: int, device: Any) -> Any:
    """A PyNcclCommunicator over a StatelessProcessGroup (a TCPStore rendezvous outside torch.distributed's
    global group, so it cannot interfere with the learner's DDP group or vLLM's own groups). Blocks until all
    ``world_size`` ranks have joined."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


def tensor_meta(state_dict: Mapping[str, torch.Tensor]) -> list[TensorMeta]:
    """What the receivers need to allocate each tensor before its broadcast arrives."""
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in state_dict.items()]


class NcclWeightReceiver:
    """vLLM worker extension (mixed into the worker class; ``self`` is the vLLM worker)."""

    def rlvr_init_weight_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> None:
        worker: Any = self
        rank = rank_offset + worker.rank  # worker.rank: this worker's rank inside its engine (0 with TP=1)
        worker._rlvr_weight_group = _communicator(master_address, master_port, rank, world_size, worker.device)

    def rlvr_receive_weights(self, meta: list[TensorMeta]) -> None:
        """Receive every tensor of ``meta`` (in order) from rank 0, then reload them in place."""
        import torch

        worker: Any = self
        group = worker._rlvr_weight_group
        received = []
        for name, dtype_name, shape in meta:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype_name), device=worker.device)
            group.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
            received.append((name, tensor))
        torch.cuda.current_stream().synchronize()
        # Same layer-wise in-place reload as the CPU path (handles fused qkv / gate_up and any repacking).
        worker.reload_weights(weights_iterator=received)


def engine_join(engine: Any, master_address: str, master_port: int, rank_offset: int, world_size: int) -> None:
    """Make the engine's worker(s) join the learner's NCCL group (blocks until the learner joins too)."""
    _require_vllm(engine)
    engine.llm.collective_rpc("rlvr_init_weight_group", args=(master_address, master_port, rank_offset, world_size))


def engine_receive(engine: Any, meta: list[TensorMeta]) -> None:
    """Receive one broadcast round into the engine, then drop KV blocks cached under the old weights."""
    _require_vllm(engine)
    engine.llm.collective_rpc("rlvr_receive_weights", args=(meta,))
    engine.llm.reset_prefix_cache()


def _require_vllm(engine: Any) -> None:
    if not hasattr(engine, "llm"):
        raise TypeError(f"NCCL weight sync needs rollout.engine=vllm on GPU, got {type(engine).__name__}")


class NcclWeightBroadcaster:
    """Learner rank 0's end of the NCCL group; one per set of rollout actors.

    >>> address = ray.util.get_node_ip_address()  # doctest: +SKIP
    >>> broadcaster = NcclWeightBroadcaster(group.actors, address, 29555, deadline_s=120.0)  # doctest: +SKIP
    >>> broadcaster.push(model.state_dict(), version=1)  # doctest: +SKIP
    """

    def __init__(self, actors: Sequence[Any], master_address: str, master_port: int, deadline_s: float) -> None:
        import torch

        self.actors = list(actors)
        self.deadline_s = deadline_s
        self.device = torch.device("cuda", torch.cuda.current_device())
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-nccl")
        self._broken = False
        world_size = 1 + len(self.actors)
        # The rendezvous blocks until every rank arrives, so the engines must be joining while we join.
        joins = [a.nccl_join.remote(master_address, master_port, 1 + i, world_size) for i, a in enumerate(self.actors)]
        started = time.monotonic()
        joined = self._pool.submit(_communicator, master_address, master_port, 0, world_size, self.device)
        self.group = self._within_deadline(joined, "join the NCCL weight group", joins, version=None)
        _wait_acks(joins, None, self._remaining(started))

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Broadcast ``state_dict`` to every engine and wait until all acknowledge ``version``."""
        if self._broken:
            raise WeightSyncError("an earlier NCCL weight sync timed out; create a new NcclWeightBroadcaster")
        tensors = {name: t.detach().to(self.device).contiguous() for name, t in state_dict.items()}
        acks = [a.nccl_receive.remote(tensor_meta(tensors), version) for a in self.actors]
        sent = self._pool.submit(self._broadcast_all, list(tensors.values()))
        started = time.monotonic()
        self._within_deadline(sent, f"broadcast version {version}", acks, version)
        _wait_acks(acks, version, self._remaining(started))

    def _broadcast_all(self, tensors: list[torch.Tensor]) -> None:
        import torch

        stream = torch.cuda.current_stream()
        for tensor in tensors:
            self.group.broadcast(tensor, src=0, stream=stream)
        stream.synchronize()

    def _within_deadline(
        self, future: concurrent.futures.Future, what: str, acks: list[Any], version: int | None
    ) -> Any:
        try:
            return future.result(timeout=self.deadline_s)
        except concurrent.futures.TimeoutError:
            self._broken = True
            silent = [i for i, ref in enumerate(acks) if not ray.wait([ref], timeout=0)[0]]
            raise WeightSyncTimeout(
                f"NCCL weight sync (version {version}): could not {what} within sync.deadline_s={self.deadline_s:g}s; "
                f"rollout actors not done: {silent}"
            ) from None

    def _remaining(self, started: float) -> float:
        return max(0.0, self.deadline_s - (time.monotonic() - started))


def _wait_acks(acks: list[Any], version: int | None, timeout_s: float) -> None:
    """Every actor's acknowledgement within ``timeout_s``, each equal to ``version`` (when given).

    ``acks[i]`` is actor ``i``'s acknowledgement ref."""
    actor_of = {ref: index for index, ref in enumerate(acks)}
    done, silent = ray.wait(acks, num_returns=len(acks), timeout=timeout_s)
    if silent:
        indices = sorted(actor_of[ref] for ref in silent)
        raise WeightSyncTimeout(
            f"NCCL weight sync (version {version}): rollout actors {indices} "
            f"did not acknowledge within {timeout_s:.1f}s"
        )
    if version is None:
        return
    wrong = sorted(actor_of[ref] for ref, got in zip(done, ray.get(done), strict=True) if got != version)
    if wrong:
        raise WeightSyncError(f"NCCL weight sync: rollout actors {wrong} did not report version {version}")
