"""Weight sync over NCCL: learner rank 0 broadcasts every tensor straight into the vLLM engines' GPU memory.

Every vLLM / CUDA / torch import is inside a function, so importing this module costs nothing on CPU.

Pieces, and where they run:

- :class:`NcclWeightReceiver` -- a vLLM *worker extension*: ``VllmEngine`` always passes
  ``worker_extension_cls="rlvr_ray.sync.nccl.NcclWeightReceiver"``, which mixes these methods into vLLM's worker
  (harmless on CPU, where they are never called). Method names carry an ``rlvr_`` prefix so they never collide
  with vLLM's own worker methods.
- :func:`engine_join` / :func:`engine_receive` -- called by ``RolloutWorker.nccl_join`` / ``nccl_receive`` in
  the rollout actor; they reach the worker through ``LLM.collective_rpc``.
- :class:`NcclWeightBroadcaster` -- created on learner rank 0 (a GPU process) with the rollout group's *live* list
  of actor handles; ``push(state_dict, version)`` is the NCCL twin of
  :func:`rlvr_ray.sync.object_store.push_weights`.
- :func:`join_weight_group` / :func:`receive_weights` -- the collective itself, behind one small interface with two
  implementations: ``nccl`` (vLLM's PyNcclCommunicator, GPU) and ``gloo`` (torch's ProcessGroupGloo, CPU). The
  broadcaster's logic (membership, rejoin, deadlines, acknowledgements) is the same for both.

Contract, same as the object-store path: every actor acknowledges ``version`` or :class:`WeightSyncTimeout` names
the ones that did not within ``deadline_s``. Collectives have no timeout of their own and hang if a peer is gone, so
the broadcast runs in a daemon thread and the deadline is enforced around it.

Respawned engines. The group's world size is fixed when it is formed and a dead rank cannot be swapped out of a
communicator, so the broadcaster re-forms the whole group (a new rendezvous on a new port, rank ``1 + i`` = actor
``i``) whenever the actor handles differ from the ones that joined (``RolloutGroup`` replaces a dead actor in its
``actors`` list in place, and the broadcaster reads that list on every push), or after a failed or timed-out push.
A respawned engine starts at version 0; re-forming the group before the broadcast brings it to the pushed version,
and :meth:`NcclWeightBroadcaster.catch_up` does so at once with the last pushed weights (kept as a copy on the
learner's device), without waiting for the next push. ``rejoins`` counts the re-formed groups.

Tested here (CPU, no GPU): the broadcaster with the ``gloo`` collective between real Ray actors, including a killed
and respawned actor (tests/sync/test_nccl_on_cpu.py). NOT tested here: the ``nccl`` collective, the vLLM worker
extension and :func:`engine_join` / :func:`engine_receive` (they need a GPU and vLLM's CUDA build); they follow vLLM's
RLHF example (``examples/offline_inference/rlhf.py``: a ``StatelessProcessGroup`` rendezvous, a
``PyNcclCommunicator`` over it, broadcast from the trainer at rank 0, the worker reloading what it received).

Assumption: one GPU worker per engine (tensor parallel size 1, what ``RolloutConfig`` describes).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import ray
from ray.exceptions import RayActorError, RayError

from rlvr_ray.sync.object_store import WeightSyncError, WeightSyncTimeout

if TYPE_CHECKING:
    import torch

TensorMeta = tuple[str, str, tuple[int, ...]]
"""(HF parameter name, torch dtype name e.g. ``float32``, shape) of one broadcast tensor, in broadcast order."""

Backend = Literal["nccl", "gloo"]
EXTENSION_CLASS = "rlvr_ray.sync.nccl.NcclWeightReceiver"


class _NcclGroup:
    """vLLM's PyNcclCommunicator over a StatelessProcessGroup (a TCPStore rendezvous outside torch.distributed's
    global group, so it cannot interfere with the learner's DDP group or vLLM's own groups)."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int, device: Any) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank, world_size=world_size)
        self.comm = PyNcclCommunicator(group, device=device)

    def broadcast(self, tensor: torch.Tensor) -> None:
        import torch

        self.comm.broadcast(tensor, src=0, stream=torch.cuda.current_stream())

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()


class _GlooGroup:
    """torch's ProcessGroupGloo over its own TCPStore (rank 0 hosts it): the CPU twin of :class:`_NcclGroup`."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int, timeout_s: float) -> None:
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(master_address, master_port, world_size, rank == 0, timeout=timeout)
        self.group: Any = dist.ProcessGroupGloo(store, rank, world_size, timeout)

    def broadcast(self, tensor: torch.Tensor) -> None:
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def synchronize(self) -> None:
        pass


def join_weight_group(
    backend: Backend,
    master_address: str,
    master_port: int,
    rank: int,
    world_size: int,
    device: Any = None,
    timeout_s: float = 600.0,
) -> _NcclGroup | _GlooGroup:
    """Join the weight group as ``rank`` (0: the learner); blocks until all ``world_size`` ranks have joined.

    ``timeout_s`` (gloo only; NCCL collectives have none): how long a rendezvous or a broadcast may wait for a peer
    before it raises. A receiver blocked in a broadcast whose sender gave up cannot join a re-formed group until
    then; with NCCL it stays blocked, and the broadcaster's next join times out naming it (replace that actor)."""
    if backend == "nccl":
        return _NcclGroup(master_address, master_port, rank, world_size, device)
    if backend == "gloo":
        return _GlooGroup(master_address, master_port, rank, world_size, timeout_s)
    raise ValueError(f"weight-group backend {backend!r} is not one of: nccl, gloo")


def receive_weights(group: _NcclGroup | _GlooGroup, meta: Sequence[TensorMeta], device: Any) -> list[tuple[str, Any]]:
    """Receive every tensor of ``meta`` (in order) from rank 0; returns (name, tensor) pairs."""
    import torch

    received = []
    for name, dtype_name, shape in meta:
        tensor = torch.empty(shape, dtype=getattr(torch, dtype_name), device=device)
        group.broadcast(tensor)
        received.append((name, tensor))
    group.synchronize()
    return received


def tensor_meta(state_dict: Mapping[str, torch.Tensor]) -> list[TensorMeta]:
    """What the receivers need to allocate each tensor before its broadcast arrives."""
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in state_dict.items()]


class NcclWeightReceiver:
    """vLLM worker extension (mixed into the worker class; ``self`` is the vLLM worker)."""

    def rlvr_init_weight_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> None:
        worker: Any = self
        rank = rank_offset + worker.rank  # worker.rank: this worker's rank inside its engine (0 with TP=1)
        # A re-formed group replaces the old communicator (the broadcaster re-forms it after an engine respawn).
        worker._rlvr_weight_group = join_weight_group("nccl", master_address, master_port, rank, world_size,
                                                      worker.device)  # fmt: skip

    def rlvr_receive_weights(self, meta: list[TensorMeta]) -> None:
        """Receive every tensor of ``meta`` (in order) from rank 0, then reload them in place."""
        worker: Any = self
        received = receive_weights(worker._rlvr_weight_group, meta, worker.device)
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


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
    """Run ``fn`` in a daemon thread: a collective hung on a dead peer must not keep the process from exiting."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def target() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to the waiting caller
            future.set_exception(err)

    threading.Thread(target=target, name="rlvr-weight-group", daemon=True).start()
    return future


def _actor_key(actor: Any) -> str:
    actor_id = getattr(actor, "_actor_id", None)
    return actor_id.hex() if actor_id is not None else str(id(actor))


class NcclWeightBroadcaster:
    """Learner rank 0's end of the weight group over the rollout actors.

    Arguments:
        actors: the rollout group's live list of actor handles (``RolloutGroup.actors``, which it updates in place
            when it replaces a dead actor), or a callable returning the current handles. Read on every push.
        master_address: this process's address, reachable from every engine.
        master_port: the port of the first rendezvous (later ones, after a respawn, take a free port).
        deadline_s: how long a join or a push may take before :class:`WeightSyncTimeout`.
        backend: ``nccl`` (GPU engines) or ``gloo`` (CPU; what the tests run).
        device: where the broadcast tensors live (default: the current CUDA device for nccl, CPU for gloo).

    >>> address = ray.util.get_node_ip_address()  # doctest: +SKIP
    >>> broadcaster = NcclWeightBroadcaster(group.actors, address, 29555, deadline_s=120.0)  # doctest: +SKIP
    >>> broadcaster.push(model.state_dict(), version=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        actors: Sequence[Any] | Callable[[], Sequence[Any]],
        master_address: str,
        master_port: int,
        deadline_s: float,
        backend: Backend = "nccl",
        device: Any = None,
    ) -> None:
        import torch

        self._current: Callable[[], Sequence[Any]] = actors if callable(actors) else (lambda: actors)
        self.master_address, self.deadline_s, self.backend = master_address, deadline_s, backend
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self.device = device
        self.rejoins = 0  # groups re-formed after the first (an engine respawned, or a push failed)
        self._members: list[str] = []
        self._needs_rejoin = False
        self._last: tuple[dict[str, torch.Tensor], int] | None = None
        self._join(list(self._current()), master_port)

    @property
    def actors(self) -> list[Any]:
        """The rollout actors as of now (the group's current handles)."""
        return list(self._current())

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Broadcast ``state_dict`` to every engine and wait until all acknowledge ``version``.

        Re-forms the group first when an engine was replaced since the last push (the new one joins and receives
        this version like the others) or when the last push failed."""
        tensors = {name: t.detach().to(self.device).contiguous() for name, t in state_dict.items()}
        self._last = ({name: t.clone() for name, t in tensors.items()}, version)
        self._send(tensors, version)

    def catch_up(self) -> bool:
        """If an engine was replaced since the last push, re-form the group and re-send the last pushed weights
        (same version), so a respawned engine holds them before it generates. Returns whether it did."""
        if self._last is None or not self._membership_changed():
            return False
        self._send(*self._last)
        return True

    # ------------------------------------------------------------------------------------------------------------

    def _membership_changed(self) -> bool:
        return [_actor_key(a) for a in self._current()] != self._members

    def _send(self, tensors: Mapping[str, torch.Tensor], version: int) -> None:
        actors = list(self._current())
        if self._needs_rejoin or self._membership_changed():
            self._join(actors, free_port(self.master_address))
            self.rejoins += 1
        acks = [a.nccl_receive.remote(tensor_meta(tensors), version) for a in actors]
        started = time.monotonic()
        sent = _in_daemon_thread(self._broadcast_all, self.group, list(tensors.values()))
        self._within_deadline(sent, f"broadcast version {version}", acks, version)
        self._acknowledged(acks, version, self._remaining(started))

    def _join(self, actors: list[Any], port: int) -> None:
        """Form the group: rank 0 here, rank ``1 + i`` actor ``i``. The rendezvous blocks until every rank
        arrives, so the engines must be joining while we join."""
        self._needs_rejoin = True  # until this join completes
        world_size = 1 + len(actors)
        joins = [a.nccl_join.remote(self.master_address, port, 1 + i, world_size) for i, a in enumerate(actors)]
        started = time.monotonic()
        joined = _in_daemon_thread(join_weight_group, self.backend, self.master_address, port, 0, world_size,
                                   self.device)  # fmt: skip
        self.group = self._within_deadline(joined, "join the weight group", joins, version=None)
        self._acknowledged(joins, None, self._remaining(started))
        self._members, self._needs_rejoin = [_actor_key(a) for a in actors], False

    def _broadcast_all(self, group: _NcclGroup | _GlooGroup, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            group.broadcast(tensor)
        group.synchronize()

    def _within_deadline(
        self, future: concurrent.futures.Future, what: str, acks: list[Any], version: int | None
    ) -> Any:
        try:
            return future.result(timeout=self.deadline_s)
        except concurrent.futures.TimeoutError:
            self._needs_rejoin = True  # the communicator is in an unknown state: the next push re-forms the group
            silent = [i for i, ref in enumerate(acks) if not ray.wait([ref], timeout=0)[0]]
            raise WeightSyncTimeout(
                f"{self.backend} weight sync (version {version}): could not {what} within "
                f"sync.deadline_s={self.deadline_s:g}s; rollout actors not done: {silent}"
            ) from None
        except Exception as err:
            self._needs_rejoin = True
            raise WeightSyncError(f"{self.backend} weight sync (version {version}): could not {what}: {err}") from err

    def _remaining(self, started: float) -> float:
        return max(0.0, self.deadline_s - (time.monotonic() - started))

    def _acknowledged(self, acks: list[Any], version: int | None, timeout_s: float) -> None:
        try:
            _wait_acks(acks, version, timeout_s)
        except WeightSyncError:
            self._needs_rejoin = True
            raise


def _wait_acks(acks: list[Any], version: int | None, timeout_s: float) -> None:
    """Every actor's acknowledgement within ``timeout_s``, each equal to ``version`` (when given).

    ``acks[i]`` is actor ``i``'s acknowledgement ref."""
    actor_of = {ref: index for index, ref in enumerate(acks)}
    done, silent = ray.wait(acks, num_returns=len(acks), timeout=timeout_s)
    if silent:
        indices = sorted(actor_of[ref] for ref in silent)
        raise WeightSyncTimeout(
            f"weight sync (version {version}): rollout actors {indices} did not acknowledge within {timeout_s:.1f}s"
        )
    died, wrong = [], []
    for ref in done:
        try:
            got = ray.get(ref)
        except RayActorError:
            died.append(actor_of[ref])
            continue
        except RayError as err:  # the receive itself failed (e.g. the collective lost a peer)
            got = f"error {err.__class__.__name__}"
        if version is not None and got != version:
            wrong.append(actor_of[ref])
    if died or wrong:
        raise WeightSyncError(
            f"weight sync (version {version}): rollout actors {sorted(died)} died, {sorted(wrong)} failed or did not "
            f"report version {version}",
            died=sorted(died),
        )
