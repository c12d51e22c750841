"""The verifier actor pool: scores rollout batches on Ray actors, independently of generation.

A batch is cut into chunks of ``cfg.chunk_size`` completions and spread over ``cfg.num_actors`` actors, one chunk
in flight per actor. When a chunk's actor raises, dies or misses ``cfg.deadline_s`` (counted from submission to a
started actor), that actor is killed and replaced by a freshly spawned one, and the chunk goes back to the head
of the queue for the next free actor, at most ``cfg.max_retries`` times; after that the step fails with
:class:`VerifierError`. A chunk is never silently scored 0 or dropped.

The scorer is any picklable callable ``(prompt_ids, completion_ids, answers) -> Scores`` over N aligned triples;
training passes ``functools.partial(score_batch, vocab=..., reward_type=..., boxed_weight=..., correct_weight=...)``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError

from rlvr_ray.config import VerifierConfig
from rlvr_ray.types import Completion, RolloutBatch, ScoredBatch, Scores

Scorer = Callable[[list[list[int]], list[list[int]], Sequence[int]], Scores]
"""(prompt_ids [N], completion_ids [N], answers [N]) -> Scores with [N] arrays."""

ACTOR_START_TIMEOUT_S = 120.0
"""A (re)spawned actor that is not up by then fails the step: usually resources the cluster does not have."""


class VerifierError(RuntimeError):
    """Scoring failed loudly: a chunk kept failing past ``max_retries``, an actor never started, or the scorer
    returned malformed scores."""


def length_scorer(prompt_ids: list[list[int]], completion_ids: list[list[int]], answers: Sequence[int]) -> Scores:
    """A trivial picklable scorer for examples and smoke tests: every reward is the completion length.

    >>> length_scorer([[1]], [[2, 3]], [0]).reward
    array([2.], dtype=float32)
    """
    lengths = np.array([len(c) for c in completion_ids], dtype=np.float32)
    return Scores(boxed=lengths, correct=lengths, step=lengths, combined=lengths, reward=lengths)


class VerifierWorker:
    """Holds one scorer and applies it to chunks; runs as the Ray actor :data:`VerifierActor`."""

    def __init__(self, scorer: Scorer) -> None:
        # Scoring is single-threaded Python; extra BLAS/torch threads would only fight the co-located actors.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        self._scorer = scorer

    def ready(self) -> bool:
        """Resolves once the actor is constructed; the pool starts deadlines only after this."""
        return True

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], answers: Sequence[int]) -> Scores:
        """The scorer applied to N aligned (prompt, completion, answer) triples."""
        return self._scorer(prompt_ids, completion_ids, answers)

    def score_share(
        self, share: tuple[list[Completion], int, float], prompt_ids: list[list[int]], answers: Sequence[int]
    ) -> Scores:
        """Streaming: score one rollout actor's share as soon as it is generated. ``share`` is the actor's
        ``generate`` result (Ray resolves the ObjectRef passed in, so this task starts when generation ends);
        ``prompt_index`` of each completion is local to ``prompt_ids``."""
        completions = share[0]
        return self._scorer(
            [prompt_ids[c.prompt_index] for c in completions],
            [c.token_ids for c in completions],
            [int(answers[c.prompt_index]) for c in completions],
        )


VerifierActor = ray.remote(VerifierWorker)
"""The Ray actor class. The pool spawns it with ``max_restarts=0, max_task_retries=0``: Ray must not restart or
retry it behind the pool's back, since the pool does that itself, with a deadline and a budget."""


@dataclass
class _Chunk:
    """Completions [start, stop) of the batch and how often scoring them has failed."""

    index: int
    start: int
    stop: int
    failures: int = 0
    timed_out: bool = False

    def describe(self) -> str:
        return f"chunk {self.index} (completions {self.start}..{self.stop - 1})"


@dataclass
class _Attempt:
    chunk: _Chunk
    slot: int
    deadline: float


@dataclass
class _Counters:
    timed_out_chunks: int = 0
    retries: int = 0
    errors: int = 0
    respawns: int = 0


@dataclass
class _Run:
    """The state of one :meth:`VerifierPool.score` call."""

    rollouts: RolloutBatch
    pending: deque[_Chunk]
    idle: deque[int]
    in_flight: dict[Any, _Attempt] = dataclasses.field(default_factory=dict)
    results: dict[int, Scores] = dataclasses.field(default_factory=dict)
    counters: _Counters = dataclasses.field(default_factory=_Counters)


class VerifierPool:
    """A fixed-size pool of :class:`VerifierActor` with deadlines, respawn and bounded retries.

    Arguments:
        scorer: picklable ``(prompt_ids, completion_ids, answers) -> Scores``.
        cfg: the ``verifier`` config section (actors, CPUs, custom resource, chunk size, deadline, retries).
        actor_start_timeout_s: how long a (re)spawned actor may take to come up before the step fails.

    Examples:
        >>> import numpy as np
        >>> from rlvr_ray.config import VerifierConfig
        >>> from rlvr_ray.types import RolloutBatch
        >>> from rlvr_ray.verify.pool import VerifierPool, length_scorer
        >>> pool = VerifierPool(length_scorer, VerifierConfig(num_actors=2, chunk_size=2))
        >>> rollouts = RolloutBatch(prompt_ids=[[1]] * 3, completion_ids=[[5], [5, 6], [5, 6, 7]],
        ...     logprobs=[[0.0], [0.0] * 2, [0.0] * 3], group_ids=np.zeros(3, dtype=np.int64),
        ...     answers=np.zeros(3, dtype=np.int64), complexities=np.ones(3, dtype=np.int64),
        ...     policy_version=np.zeros(3, dtype=np.int64))
        >>> pool.score(rollouts).scores.reward
        array([1., 2., 3.], dtype=float32)
        >>> pool.shutdown()
    """

    def __init__(self, scorer: Scorer, cfg: VerifierConfig, actor_start_timeout_s: float = ACTOR_START_TIMEOUT_S):
        self._scorer = scorer
        self._cfg = cfg
        self._start_timeout_s = actor_start_timeout_s
        self._actors: list[Any] = []
        # ready() refs of actors still starting -> (slot, start deadline); they get no chunk until ready.
        self._starting: dict[Any, tuple[int, float]] = {}
        self._closed = False
        self._next_stream_slot = 0
        for slot in range(cfg.num_actors):
            self._actors.append(None)
            self._spawn(slot)

    # ------------------------------------------------------------------------------------------------------------
    # Public API

    def score(self, rollouts: RolloutBatch, prescored: list[Any] | None = None) -> ScoredBatch:
        """Score every completion; scores come back in the batch's order.

        ``prescored``: the refs :meth:`prescore` returned for this batch's generation. When every one of them holds
        well-formed scores within ``cfg.deadline_s``, those are the batch's scores (``verify/streamed`` = 1);
        otherwise (a share was re-generated after a rollout actor died, a verifier died or hung) the whole batch
        is scored again below, with the usual deadlines, respawns and retries.

        Returns a :class:`ScoredBatch` whose ``verifier_stats`` are ``verify/timeouts`` (fraction of chunks that
        timed out at least once), ``verify/retries``, ``verify/errors`` (attempts that raised or whose actor
        died), ``verify/respawns`` and ``verify/seconds``. Raises :class:`VerifierError` when a chunk fails more
        than ``max_retries`` times, and ``ValueError`` when the batch's lists have different lengths.

        Examples:
            >>> import numpy as np
            >>> from rlvr_ray.config import VerifierConfig
            >>> from rlvr_ray.types import RolloutBatch
            >>> from rlvr_ray.verify.pool import VerifierPool, length_scorer
            >>> pool = VerifierPool(length_scorer, VerifierConfig(num_actors=1, chunk_size=1))
            >>> rollouts = RolloutBatch(prompt_ids=[[1], [1]], completion_ids=[[5, 6], [5]],
            ...     logprobs=[[0.0] * 2, [0.0]], group_ids=np.zeros(2, dtype=np.int64),
            ...     answers=np.zeros(2, dtype=np.int64), complexities=np.ones(2, dtype=np.int64),
            ...     policy_version=np.zeros(2, dtype=np.int64))
            >>> scored = pool.score(rollouts)
            >>> scored.scores.reward, scored.verifier_stats["verify/retries"]
            (array([2., 1.], dtype=float32), 0.0)
            >>> pool.shutdown()
        """
        if self._closed:
            raise VerifierError("the verifier pool is shut down")
        _check_aligned(rollouts)
        started = time.monotonic()
        if prescored:
            streamed = self._streamed_scores(prescored, len(rollouts))
            if streamed is not None:
                stats = {**_stats(_Counters(), 0, time.monotonic() - started), "verify/streamed": 1.0}
                return ScoredBatch(rollouts, streamed, stats)
        run = _Run(rollouts, deque(self._chunks(len(rollouts))), deque(self._ready_slots()))
        num_chunks = len(run.pending)
        try:
            while run.pending or run.in_flight:
                self._submit_idle(run)
                self._wait_and_handle(run)
        except VerifierError:
            # The abandoned chunks would otherwise keep their actors busy into the next step.
            for attempt in list(run.in_flight.values()):
                self._respawn(attempt.slot, run.counters)
            raise
        scores = _concatenate([run.results[i] for i in range(num_chunks)])
        stats = {**_stats(run.counters, num_chunks, time.monotonic() - started), "verify/streamed": 0.0}
        return ScoredBatch(rollouts, scores, stats)

    def _streamed_scores(self, refs: list[Any], expected: int) -> Scores | None:
        """The streamed shares' scores joined in share order, or None when any is missing, late or malformed."""
        _, late = ray.wait(refs, num_returns=len(refs), timeout=self._cfg.deadline_s)
        if late:
            return None
        try:
            parts = ray.get(refs)
        except RayError:
            return None
        if not all(isinstance(p, Scores) for p in parts):
            return None
        joined = _concatenate(parts)
        if any(len(getattr(joined, f.name)) != expected for f in dataclasses.fields(Scores)):
            return None
        return joined

    def prescore(self, pending: Any) -> list[Any]:
        """Streaming scoring of a generation in flight (a ``PendingRollout``): one task per rollout share, queued
        now on the verifier actors in turn; each starts the moment its share is generated, while the caller (the
        learner) is busy. Pass the returned refs to :meth:`score` with the collected batch."""
        refs = []
        answers = np.asarray(pending.prompts.answers)
        for share_ref, share in pending.refs.items():
            actor = self._actors[self._next_stream_slot % len(self._actors)]  # round robin across calls
            self._next_stream_slot += 1
            prompt_ids = pending.prompts.prompt_ids[share.start : share.stop]
            refs.append(actor.score_share.remote(share_ref, prompt_ids, answers[share.start : share.stop].tolist()))
        return refs

    def shutdown(self) -> None:
        """Kill every actor; the pool cannot score afterwards. Safe to call twice.

        Examples:
            >>> from rlvr_ray.config import VerifierConfig
            >>> from rlvr_ray.verify.pool import VerifierPool, length_scorer
            >>> pool = VerifierPool(length_scorer, VerifierConfig(num_actors=1))
            >>> pool.shutdown()
            >>> pool.shutdown()
        """
        for actor in self._actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._actors = [None] * len(self._actors)
        self._starting.clear()
        self._closed = True

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------------------------------
    # Actors

    def _spawn(self, slot: int) -> None:
        resources = {self._cfg.resource: 1} if self._cfg.resource else None
        options = VerifierActor.options(
            num_cpus=self._cfg.num_cpus, resources=resources, max_restarts=0, max_task_retries=0
        )
        actor: Any = options.remote(self._scorer)  # method handles are untyped in Ray's stubs
        self._actors[slot] = actor
        self._starting[actor.ready.remote()] = (slot, time.monotonic() + self._start_timeout_s)

    def _respawn(self, slot: int, counters: _Counters) -> None:
        """Kill the actor in ``slot`` (stuck, dead or poisoned) and start a fresh one there."""
        ray.kill(self._actors[slot], no_restart=True)
        self._spawn(slot)
        counters.respawns += 1
        print(f"[verifier] actor {slot} died, hung or failed; respawned it", file=sys.stderr)

    def _ready_slots(self) -> list[int]:
        starting = {slot for slot, _ in self._starting.values()}
        return [slot for slot in range(len(self._actors)) if slot not in starting]

    def _handle_started(self, ref: Any, run: _Run) -> None:
        slot, _ = self._starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as err:
            self._respawn(slot, run.counters)  # keep the slot accounted for; the next step tries again
            raise VerifierError(f"verifier actor {slot} failed to start: {_brief(err)}") from err
        run.idle.append(slot)

    def _check_start_deadlines(self, now: float) -> None:
        for slot, deadline in self._starting.values():
            if now >= deadline:
                raise VerifierError(
                    f"verifier actor {slot} did not start within {self._start_timeout_s:.0f}s; does the cluster have "
                    f"num_cpus={self._cfg.num_cpus} and resource {self._cfg.resource!r} free?"
                )

    # ------------------------------------------------------------------------------------------------------------
    # Chunks

    def _chunks(self, n: int) -> list[_Chunk]:
        size = self._cfg.chunk_size
        return [_Chunk(i, start, min(start + size, n)) for i, start in enumerate(range(0, n, size))]

    def _submit_idle(self, run: _Run) -> None:
        while run.pending and run.idle:
            chunk, slot = run.pending.popleft(), run.idle.popleft()
            batch = run.rollouts
            ref = self._actors[slot].score.remote(
                batch.prompt_ids[chunk.start : chunk.stop],
                batch.completion_ids[chunk.start : chunk.stop],
                batch.answers[chunk.start : chunk.stop].tolist(),
            )
            run.in_flight[ref] = _Attempt(chunk, slot, time.monotonic() + self._cfg.deadline_s)

    def _wait_and_handle(self, run: _Run) -> None:
        """Block until something finishes or the nearest deadline passes, then handle all that is settled."""
        refs = list(run.in_flight) + list(self._starting)
        if not refs:  # every slot is busy, starting or idle, so with chunks pending this cannot happen
            raise VerifierError("internal error: chunks pending but no verifier actor is busy, starting or idle")
        deadlines = [a.deadline for a in run.in_flight.values()] + [d for _, d in self._starting.values()]
        # fetch_local=False: "done" is what the deadline is about; the small result is fetched by ray.get.
        ray.wait(refs, num_returns=1, timeout=max(0.0, min(deadlines) - time.monotonic()), fetch_local=False)
        # Handle everything that is done, not only the first, before judging deadlines.
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in ready:
            if ref in self._starting:
                self._handle_started(ref, run)
            else:
                self._handle_result(ref, run)
        now = time.monotonic()
        for ref, attempt in list(run.in_flight.items()):
            if now >= attempt.deadline:
                del run.in_flight[ref]
                self._handle_timeout(attempt, run)
        self._check_start_deadlines(now)

    def _handle_result(self, ref: Any, run: _Run) -> None:
        attempt = run.in_flight.pop(ref)
        try:
            scores = ray.get(ref)
        except RayError as err:  # the scorer raised (RayTaskError) or the actor died (RayActorError, ...)
            run.counters.errors += 1
            self._respawn(attempt.slot, run.counters)
            self._retry_or_raise(attempt, run, _brief(err))
            return
        _check_scores(scores, attempt.chunk)
        run.results[attempt.chunk.index] = scores
        run.idle.append(attempt.slot)

    def _handle_timeout(self, attempt: _Attempt, run: _Run) -> None:
        if not attempt.chunk.timed_out:
            attempt.chunk.timed_out = True
            run.counters.timed_out_chunks += 1
        self._respawn(attempt.slot, run.counters)
        self._retry_or_raise(attempt, run, f"no result within deadline_s={self._cfg.deadline_s}")

    def _retry_or_raise(self, attempt: _Attempt, run: _Run, reason: str) -> None:
        chunk = attempt.chunk
        chunk.failures += 1
        if chunk.failures > self._cfg.max_retries:
            raise VerifierError(
                f"{chunk.describe()} failed {chunk.failures} times (max_retries={self._cfg.max_retries}); "
                f"last failure: {reason}"
            )
        run.counters.retries += 1
        run.pending.appendleft(chunk)  # first in line, so a flaky chunk does not wait behind the whole batch


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _check_aligned(rollouts: RolloutBatch) -> None:
    sizes = (len(rollouts.prompt_ids), len(rollouts.completion_ids), len(rollouts.answers))
    if len(set(sizes)) != 1:
        raise ValueError(f"rollouts need one prompt and answer per completion, got {sizes[0]}, {sizes[1]}, {sizes[2]}")


def _check_scores(scores: object, chunk: _Chunk) -> None:
    """A malformed result is a scorer bug that a retry would repeat: fail at once, naming the field."""
    if not isinstance(scores, Scores):
        raise VerifierError(f"scorer returned {type(scores).__name__} for {chunk.describe()}, expected Scores")
    expected = chunk.stop - chunk.start
    for field in dataclasses.fields(Scores):
        got = len(getattr(scores, field.name))
        if got != expected:
            raise VerifierError(
                f"scorer returned {got} {field.name} values for {chunk.describe()}, expected {expected}"
            )


def _concatenate(parts: list[Scores]) -> Scores:
    """Chunk scores joined in order; an empty batch gives empty float32 arrays."""
    joined = {
        field.name: np.concatenate([getattr(p, field.name) for p in parts]).astype(np.float32, copy=False)
        if parts
        else np.zeros(0, dtype=np.float32)
        for field in dataclasses.fields(Scores)
    }
    return Scores(**joined)


def _stats(counters: _Counters, num_chunks: int, seconds: float) -> dict[str, float]:
    return {
        "verify/timeouts": counters.timed_out_chunks / num_chunks if num_chunks else 0.0,
        "verify/retries": float(counters.retries),
        "verify/errors": float(counters.errors),
        "verify/respawns": float(counters.respawns),
        "verify/seconds": seconds,
    }


def _brief(err: BaseException) -> str:
    """First and last line of a Ray error: what failed and the root cause (the middle is the remote traceback)."""
    lines = [line for line in _ANSI_ESCAPE.sub("", str(err)).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    head, tail = lines[0].strip(), lines[-1].strip()
    return f"{type(err).__name__}: {head}" + ("" if tail == head else f" ... {tail}")


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
