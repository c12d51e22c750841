"""The bounded-staleness rollout buffer: generations for the next steps run while the learner updates.

With ``max_staleness = k``, the buffer keeps the generations of steps ``s .. s+k`` in flight while step ``s`` trains.
A generation submitted at step ``s`` runs on the weights the engines hold then (version ``s``, since the controller
syncs version ``s`` at the end of step ``s-1``), so step ``s+k`` trains on samples exactly ``k`` versions old. Actor
tasks run in submission order, so a weight sync queued after a generation never changes the weights under it.

``k = 0`` submits step ``s`` only, when step ``s`` starts: the synchronous loop, call for call.

Every completion keeps the version that generated it. :meth:`RolloutBuffer.take` refuses a batch whose staleness is
outside ``[0, k]``, counts it (``async/refused_batches``), says so on stderr and regenerates the step on the current
weights; it never trains on it. Generations already made for later steps are saved with each checkpoint
(:meth:`snapshot`) and restored on resume (:meth:`restore`), so a resumed run trains on exactly the samples an
uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from rlvr_ray.types import PromptBatch, RolloutBatch, SamplingSpec


class StalenessError(RuntimeError):
    """A regenerated batch is still outside the staleness bound (the engines do not hold the pushed weights)."""


def staleness_of(batch: RolloutBatch, learner_version: int) -> np.ndarray:
    """[N] weight versions between each sample's behaviour policy and the policy being updated."""
    return learner_version - np.asarray(batch.policy_version, dtype=np.int64)


def within_bound(batch: RolloutBatch, learner_version: int, max_staleness: int) -> bool:
    """True when every sample is at most ``max_staleness`` versions old and none is from the future.

    >>> b = RolloutBatch([[1]], [[2]], [[0.0]], np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64),
    ...                  policy_version=np.array([3]))
    >>> within_bound(b, 4, 1), within_bound(b, 5, 1), within_bound(b, 2, 1)
    (True, False, False)
    """
    staleness = staleness_of(batch, learner_version)
    return bool(staleness.min() >= 0 and staleness.max() <= max_staleness)


class RolloutBuffer:
    """Generations keyed by step: in flight (``PendingRollout``) or collected (``RolloutBatch``).

    Arguments:
        group: the :class:`~rlvr_ray.rollout.actor.RolloutGroup` (``submit``/``collect``/``generate``).
        sample: ``step -> PromptBatch``, the deterministic prompt stream.
        sampling: the sampling spec; each step's seed is derived from its ``seed`` and the step.
        max_staleness: ``k``, the most versions a sample may lag the learner.
        prescore: optional ``PendingRollout -> refs``, the verifier pool's streaming scorer, started at submission
            so each share is scored as soon as it is generated.
    """

    def __init__(
        self,
        group: Any,
        sample: Callable[[int], PromptBatch],
        sampling: SamplingSpec,
        max_staleness: int,
        prescore: Callable[[Any], list[Any]] | None = None,
    ) -> None:
        self.group, self.sample, self.sampling, self.k, self.prescore = group, sample, sampling, max_staleness, prescore
        self.pending: dict[int, Any] = {}
        self.prompts: dict[int, PromptBatch] = {}  # sampled ahead by :meth:`prepare`, not submitted yet
        self.prescored: dict[int, list[Any]] = {}
        self.ready: dict[int, RolloutBatch] = {}
        self.refused = 0

    def spec(self, step: int) -> SamplingSpec:
        """The step's sampling spec: a fresh, reproducible seed per step."""
        return dataclasses.replace(self.sampling, seed=self.sampling.seed * 1_000_003 + step)

    def unsubmitted(self, step: int, last_step: int) -> list[int]:
        """The steps ``step .. min(step + k, last_step)`` whose generations are neither in flight nor collected."""
        window = range(step, min(step + self.k, last_step) + 1)
        return [later for later in window if later not in self.pending and later not in self.ready]

    def prepare(self, step: int, last_step: int) -> None:
        """Sample the prompts that ``fill(step, last_step)`` will submit, so that call only submits (the prompt
        stream is a function of the step, so sampling early changes nothing)."""
        for later in self.unsubmitted(step, last_step):
            if later not in self.prompts:
                self.prompts[later] = self.sample(later)

    def fill(self, step: int, last_step: int) -> None:
        """Submit the generations of steps ``step .. min(step + k, last_step)`` that are not in flight yet."""
        for later in self.unsubmitted(step, last_step):
            prompts = self.prompts.pop(later) if later in self.prompts else self.sample(later)
            self.pending[later] = self.group.submit(prompts, self.spec(later))
            if self.prescore is not None:
                self.prescored[later] = self.prescore(self.pending[later])

    def take(self, step: int, learner_version: int) -> tuple[RolloutBatch, list[Any] | None]:
        """Step ``step``'s rollouts, within the staleness bound (a batch over it is refused and regenerated), and
        the refs of their streamed scores (None when there are none, e.g. for a batch restored from a checkpoint)."""
        prescored = self.prescored.pop(step, None)
        batch = self.ready.pop(step) if step in self.ready else self.group.collect(self.pending.pop(step))
        if within_bound(batch, learner_version, self.k):
            return batch, prescored
        self.refused += 1
        versions = sorted(set(np.asarray(batch.policy_version).tolist()))
        print(
            f"[pipeline] step {step}: refused a batch from weight versions {versions} for learner version "
            f"{learner_version} (training.max_staleness={self.k}); regenerating it on the current weights",
            file=sys.stderr,
        )
        batch = self.group.generate(self.sample(step), self.spec(step))
        if not within_bound(batch, learner_version, self.k):
            raise StalenessError(
                f"step {step}: regenerated rollouts come from weight versions "
                f"{sorted(set(np.asarray(batch.policy_version).tolist()))}, learner is at {learner_version}"
            )
        return batch, None

    def snapshot(self) -> list[dict[str, Any]]:
        """Collect every generation still in flight and return all of them as plain JSON data (for a checkpoint)."""
        for step in sorted(self.pending):
            self.ready[step] = self.group.collect(self.pending.pop(step))
        return [{"step": step, **batch_to_json(self.ready[step])} for step in sorted(self.ready)]

    def restore(self, inflight: list[dict[str, Any]]) -> None:
        """Put back the generations a checkpoint saved (they keep their behaviour versions)."""
        for record in inflight:
            self.ready[int(record["step"])] = batch_from_json(record)
            self.prescored.pop(int(record["step"]), None)


def batch_to_json(batch: RolloutBatch) -> dict[str, Any]:
    """A RolloutBatch as lists of ints and floats (floats round-trip exactly through JSON)."""
    return {
        "prompt_ids": batch.prompt_ids,
        "completion_ids": batch.completion_ids,
        "logprobs": [[float(x) for x in lp] for lp in batch.logprobs],
        "group_ids": np.asarray(batch.group_ids).tolist(),
        "answers": np.asarray(batch.answers).tolist(),
        "complexities": np.asarray(batch.complexities).tolist(),
        "policy_version": np.asarray(batch.policy_version).tolist(),
    }


def batch_from_json(data: dict[str, Any]) -> RolloutBatch:
    """Inverse of :func:`batch_to_json`."""
    return RolloutBatch(
        prompt_ids=[list(p) for p in data["prompt_ids"]],
        completion_ids=[list(c) for c in data["completion_ids"]],
        logprobs=[list(lp) for lp in data["logprobs"]],
        group_ids=np.asarray(data["group_ids"], dtype=np.int64),
        answers=np.asarray(data["answers"], dtype=np.int64),
        complexities=np.asarray(data["complexities"], dtype=np.int64),
        policy_version=np.asarray(data["policy_version"], dtype=np.int64),
    )
