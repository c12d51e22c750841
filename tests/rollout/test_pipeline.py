"""The bounded-staleness pipeline, in one process: the controller's step against a plain synchronous loop.

A real TorchEngine, a real learner and the real reward functions; only the Ray plumbing (actors, object store) is
replaced by an in-process group whose ``submit`` generates at once, which is what Ray's in-order actor queue gives:
a generation runs on the weights the engine holds when it is submitted, before any later sync.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from rollout_testkit import TINY, VOCAB, make_policy

from rlvr_ray.config import RunConfig, TrainingConfig
from rlvr_ray.controller import Controller, is_log_step
from rlvr_ray.learner.checkpoint import LoopState
from rlvr_ray.learner.learner import Learner
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.learner.worker import LearnerRank
from rlvr_ray.policy import load_policy
from rlvr_ray.rollout.actor import _assemble, _Share
from rlvr_ray.rollout.pipeline import RolloutBuffer, StalenessError, within_bound
from rlvr_ray.rollout.torch_engine import TorchEngine
from rlvr_ray.types import PromptBatch, RolloutBatch, SamplingSpec, ScoredBatch
from rlvr_ray.verify.pool import length_scorer

STEPS = 4


class InProcessGroup:
    """The RolloutGroup API on one in-process engine; counts the generations it made."""

    def __init__(self, model_dir: str) -> None:
        self.engine, self.version, self.respawns, self.generated = TorchEngine(model_dir), 0, 0, 0

    def submit(self, prompts: PromptBatch, spec: SamplingSpec) -> RolloutBatch:
        self.generated += 1
        share = _Share(0, 0, len(prompts))
        return _assemble(
            prompts, [share], {share: (self.engine.generate(prompts.prompt_ids, spec), self.version, 0.0)}, spec.n
        )

    def collect(self, pending: RolloutBatch) -> RolloutBatch:
        return pending

    def generate(self, prompts: PromptBatch, spec: SamplingSpec) -> RolloutBatch:
        return self.collect(self.submit(prompts, spec))

    def sync(self, state: dict[str, torch.Tensor], version: int, deadline_s: float | None = None) -> None:
        self.engine.load_weights(state)
        self.version = version

    def versions(self) -> list[int]:
        return [self.version]


class InProcessVerifier:
    """Rewards the completion's length: a random tiny policy almost never answers right, and a reward that varies
    within every group makes each step move the weights."""

    def __init__(self, cfg: TrainingConfig) -> None:
        self.score_fn = length_scorer

    def prescore(self, pending: RolloutBatch) -> list[object]:
        return []

    def score(self, rollouts: RolloutBatch, prescored: list[object] | None = None) -> ScoredBatch:
        scores = self.score_fn(rollouts.prompt_ids, rollouts.completion_ids, rollouts.answers.tolist())
        return ScoredBatch(rollouts, scores, {})


def make_run(policy: str, max_staleness: int, **overrides: int) -> tuple[RunConfig, LearnerRank, InProcessGroup]:
    training = TrainingConfig(
        batch_size=16, group_size=4, mini_batch_size=8, max_generation_length=10, complexity_range=(1, 1),
        learning_rate=3e-3, seed=3, max_staleness=max_staleness, ppo_steps=STEPS, reward_type="combined",
        **overrides,
    )  # fmt: skip
    cfg = RunConfig(model=TINY, training=training)
    torch.manual_seed(0)
    module = PolicyWithValue(load_policy(policy), with_value_head=False)
    learner = LearnerRank(Learner(training, module, module, None), 0, 1, VOCAB.pad, torch.device("cpu"))
    return cfg, learner, InProcessGroup(policy)


def controller_weights(
    policy: str, max_staleness: int, pending_after: list[set[int]] | None = None, **overrides: int
) -> tuple[dict[str, torch.Tensor], list[dict], Controller]:
    """Runs the controller's steps; ``pending_after`` gets the steps whose generations are in flight after each."""
    cfg, learner, group = make_run(policy, max_staleness, **overrides)
    controller = Controller(cfg, VOCAB, learner, group, InProcessVerifier(cfg.training), tracker=None)
    state, metrics = LoopState(), []
    for step in range(STEPS):
        metrics.append(controller.step(step, step + 1 == STEPS, state))
        if pending_after is not None:
            pending_after.append(set(controller.buffer.pending))
    return learner.policy_state(), metrics, controller


def synchronous_weights(policy: str) -> dict[str, torch.Tensor]:
    """The synchronous loop written out: sample, generate, verify, update, sync, one after the other."""
    cfg, learner, group = make_run(policy, 0)
    controller = Controller(cfg, VOCAB, learner, group, InProcessVerifier(cfg.training), tracker=None)
    sampling = controller.buffer.sampling
    for step in range(STEPS):
        prompts = controller.sampler.sample(step)
        rollouts = group.generate(prompts, dataclasses.replace(sampling, seed=sampling.seed * 1_000_003 + step))
        learner.update(controller.verifier.score(rollouts), step)
        group.sync(learner.policy_state(), step + 1)
    return learner.policy_state()


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_policy(tmp_path_factory.mktemp("pipeline_policy"), seed=2, weight_std=0.05)


def test_max_staleness_0_is_the_synchronous_loop_bit_for_bit(policy: str) -> None:
    weights, metrics, _ = controller_weights(policy, 0)
    reference = synchronous_weights(policy)
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
    initial = load_policy(policy).state_dict()
    assert any(not torch.equal(initial[name], tensor) for name, tensor in weights.items())  # training happened
    assert all(m["async/staleness_max"] == 0 for m in metrics)
    assert all(m["offpolicy/is_weight_max"] == 1.0 == m["offpolicy/is_weight_mean"] for m in metrics)


def test_max_staleness_1_trains_on_one_version_old_samples_and_differs(policy: str) -> None:
    weights, metrics, _ = controller_weights(policy, 1)
    assert [m["async/staleness_max"] for m in metrics] == [0.0] + [1.0] * (STEPS - 1)
    assert [m["sync/engine_version"] for m in metrics] == [float(s + 1) for s in range(STEPS)]
    # engine-vs-learner numerics are judged on on-policy samples only: step 0's, none afterwards
    assert metrics[0]["mismatch/logprob_max_abs_diff"] < 1e-4
    assert not any("mismatch/logprob_max_abs_diff" in m for m in metrics[1:])
    reference = synchronous_weights(policy)
    assert any(not torch.equal(weights[name], tensor) for name, tensor in reference.items())


def test_after_a_plain_step_the_next_generation_is_queued_behind_the_new_weights(policy: str) -> None:
    """Pipelined, the generation for step s+2 is submitted right after step s's weights are pushed (the engines do
    not idle while step s is logged), except after an eval or checkpoint step, whose pause must not hide it. The
    samples are the same either way: it is queued behind the same weight version."""
    pending: list[set[int]] = []
    weights, metrics, controller = controller_weights(policy, 1, pending, eval_every=2)
    assert pending == [{1, 2}, {2}, {3}, set()]  # after step 0 (plain): 1 and 2; after step 1 (eval): nothing new
    assert [m["async/staleness_max"] for m in metrics] == [0.0, 1.0, 1.0, 1.0]
    assert controller.buffer.prompts == {}  # every batch sampled ahead (while the engine generated) was submitted
    never_ahead: list[set[int]] = []
    reference, _, _ = controller_weights(policy, 1, never_ahead, eval_every=1)  # every step evaluates
    assert never_ahead == [{1}, {2}, {3}, set()]
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
    synchronous: list[set[int]] = []
    controller_weights(policy, 0, synchronous)
    assert synchronous == [set()] * STEPS  # the synchronous loop submits each step's generation when it starts


class RecordingTracker:
    def __init__(self) -> None:
        self.logged: list[int] = []
        self.metrics: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        assert "reward/mean" in metrics
        self.logged.append(step)
        self.metrics.append(dict(metrics))


@pytest.mark.parametrize(("log_every", "logged"), [(1, [0, 1, 2]), (2, [1]), (3, [2])])
def test_metrics_are_logged_every_log_every_steps(policy: str, log_every: int, logged: list[int]) -> None:
    cfg, learner, group = make_run(policy, 1, log_every=log_every, eval_every=100, checkpoint_every=100)
    tracker = RecordingTracker()
    controller = Controller(cfg, VOCAB, learner, group, InProcessVerifier(cfg.training), tracker=tracker)
    state = LoopState()
    for step in range(STEPS - 1):  # the last step evaluates, which needs a Ray Train session
        controller.after_step(step, controller.step(step, False, state), False, state)
    assert tracker.logged == logged


def test_a_logged_step_reduces_every_step_since_the_last_log(policy: str) -> None:
    """log_every=3: step 2 logs steps 0-2, so steps 0 and 1 lose nothing (means, maxima, running totals)."""
    cfg, learner, group = make_run(policy, 1, log_every=3, eval_every=100, checkpoint_every=100)
    tracker = RecordingTracker()
    controller = Controller(cfg, VOCAB, learner, group, InProcessVerifier(cfg.training), tracker=tracker)
    state, steps = LoopState(), []
    for step in range(3):
        metrics = controller.step(step, False, state)
        steps.append(dict(metrics))
        controller.after_step(step, metrics, False, state)
    assert tracker.logged == [2]
    (logged,) = tracker.metrics
    assert set(logged) == set().union(*steps)  # every key any of the steps reported
    assert len({m["reward/mean"] for m in steps}) > 1  # the steps differ, so a mean differs from any one of them
    assert logged["reward/mean"] == pytest.approx(sum(m["reward/mean"] for m in steps) / 3, rel=1e-12)
    assert logged["perf/update_s"] == pytest.approx(sum(m["perf/update_s"] for m in steps) / 3, rel=1e-12)
    assert logged["async/staleness_max"] == max(m["async/staleness_max"] for m in steps) == 1.0
    assert logged["async/staleness_mean"] == pytest.approx(2 / 3)  # step 0 trains on version-0 samples
    assert logged["sync/engine_version"] == steps[-1]["sync/engine_version"] == 3.0


def test_eval_checkpoint_and_last_steps_always_log() -> None:
    training = TrainingConfig(ppo_steps=13, log_every=5, eval_every=4, checkpoint_every=6)
    cfg = RunConfig(model=TINY, training=training)
    assert [s for s in range(13) if is_log_step(cfg, s)] == [3, 4, 5, 7, 9, 11, 12]
    assert is_log_step(cfg, 0, last=True) and not is_log_step(cfg, 0)


def test_snapshot_restores_the_in_flight_generations_exactly(policy: str) -> None:
    _, _, controller = controller_weights(policy, 1)
    buffer = controller.buffer
    buffer.fill(STEPS, STEPS + 1)  # generations for the next two steps, in flight
    saved = json.loads(json.dumps(buffer.snapshot()))
    restored = RolloutBuffer(buffer.group, buffer.sample, buffer.sampling, 1)
    restored.restore(saved)
    for step in (STEPS, STEPS + 1):
        original, again = buffer.take(step, STEPS)[0], restored.take(step, STEPS)[0]
        assert again.completion_ids == original.completion_ids
        assert again.logprobs == original.logprobs  # floats survive JSON exactly
        assert again.policy_version.tolist() == original.policy_version.tolist()


class StaleGroup(InProcessGroup):
    """Collects batches stamped with a version far in the past (e.g. an engine that missed syncs)."""

    def __init__(self, model_dir: str, stale_collects: int) -> None:
        super().__init__(model_dir)
        self.stale_collects = stale_collects

    def collect(self, pending: RolloutBatch) -> RolloutBatch:
        if self.stale_collects > 0:
            self.stale_collects -= 1
            pending = dataclasses.replace(pending, policy_version=pending.policy_version * 0 - 5)
        return pending


def test_a_batch_over_the_bound_is_refused_counted_and_regenerated(policy: str) -> None:
    cfg, _, _ = make_run(policy, 1)
    group = StaleGroup(policy, stale_collects=1)
    controller = Controller(cfg, VOCAB, make_run(policy, 1)[1], group, InProcessVerifier(cfg.training), None)
    buffer = controller.buffer
    buffer.fill(0, 3)
    batch, _ = buffer.take(0, 0)
    assert buffer.refused == 1 and group.generated == 3  # two submitted by fill, one regeneration
    assert within_bound(batch, 0, 1) and set(batch.policy_version.tolist()) == {0}


def test_a_regenerated_batch_still_over_the_bound_raises(policy: str) -> None:
    cfg, learner, _ = make_run(policy, 0)
    group = StaleGroup(policy, stale_collects=2)
    buffer = Controller(cfg, VOCAB, learner, group, InProcessVerifier(cfg.training), None).buffer
    buffer.fill(0, 0)
    with pytest.raises(StalenessError, match="step 0: regenerated rollouts come from weight versions"):
        buffer.take(0, 0)
