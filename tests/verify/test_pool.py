"""VerifierPool on a real local Ray cluster: ordering, retries on errors, deadlines, actor death, loud failure.

The scorers here are independent of rewards.py: they derive every Scores field from the inputs, differently per
field, so a chunk scored out of place or a field mixed up shows. Failures are injected once per test through
flag files in tmp_path, which the (separate-process) actors share with the test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray import cloudpickle

from rlvr_ray.config import VerifierConfig
from rlvr_ray.rollout.actor import PendingRollout, _Share
from rlvr_ray.types import Completion, PromptBatch, RolloutBatch, SamplingSpec, Scores
from rlvr_ray.verify.pool import VerifierError, VerifierPool, length_scorer

torch.set_num_threads(1)

NUM_COMPLETIONS = 11
CHUNK_SIZE = 3  # -> 4 chunks: [0..2] [3..5] [6..8] [9..10]
TRIGGER_ANSWER = 7  # answers are 0..10, so this marks chunk 2 only


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    # The actors cannot import this test module (tests/ is not a package on their path): ship its scorer by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        resources={"verifier": 4},
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class InspectableScorer:
    """Scores from the inputs: boxed = completion length, correct = answer, step = prompt length,
    combined = first completion token, reward = 100 * answer + completion length.

    ``mode`` injects a fault on calls whose chunk contains TRIGGER_ANSWER: ``raise_once``, ``sleep_once`` (past any
    deadline), ``exit_once`` (the actor process dies), ``always_raise``, ``short`` (one value too few); and
    ``slow_first`` delays the first chunk. Each call on the trigger chunk appends a line to ``calls_file`` so tests
    can count attempts.
    """

    flag_dir: str
    mode: str = "ok"

    def __call__(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], answers: Sequence[int]) -> Scores:
        if TRIGGER_ANSWER in answers:
            self._record_call()
            self._maybe_fail()
        if self.mode == "slow_first" and 0 in answers:
            time.sleep(1.0)  # chunk 0 finishes after chunks 1.. on the other actor
        lengths = np.array([len(c) for c in completion_ids], dtype=np.float32)
        answer_arr = np.asarray(answers, dtype=np.float32)
        scores = Scores(
            boxed=lengths,
            correct=answer_arr,
            step=np.array([len(p) for p in prompt_ids], dtype=np.float32),
            combined=np.array([c[0] for c in completion_ids], dtype=np.float32),
            reward=100 * answer_arr + lengths,
        )
        if self.mode == "short" and TRIGGER_ANSWER in answers:
            scores.reward = scores.reward[:-1]
        return scores

    @property
    def calls_file(self) -> Path:
        return Path(self.flag_dir) / "calls"

    def _record_call(self) -> None:
        with open(self.calls_file, "a") as f:
            f.write("call\n")

    def _first_failure(self) -> bool:
        """True exactly once per flag_dir, across processes (O_EXCL creation is atomic)."""
        try:
            os.close(os.open(Path(self.flag_dir) / "failed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def _maybe_fail(self) -> None:
        if self.mode == "always_raise":
            raise RuntimeError("verifier always broken")
        if self.mode.endswith("_once") and self._first_failure():
            if self.mode == "raise_once":
                raise RuntimeError("flaky verifier")
            if self.mode == "sleep_once":
                time.sleep(120)
            if self.mode == "exit_once":
                os._exit(1)


def make_rollouts(n: int = NUM_COMPLETIONS) -> RolloutBatch:
    completions = [[10 + i] + [1] * (i % 4) for i in range(n)]
    return RolloutBatch(
        prompt_ids=[[5] * (1 + i % 3) for i in range(n)],
        completion_ids=completions,
        logprobs=[[0.0] * len(c) for c in completions],
        group_ids=np.arange(n) // 2,
        answers=np.arange(n),
        complexities=np.ones(n, dtype=np.int64),
        policy_version=np.zeros(n, dtype=np.int64),
    )


def direct_scores(scorer: InspectableScorer, rollouts: RolloutBatch) -> Scores:
    return InspectableScorer(scorer.flag_dir)(rollouts.prompt_ids, rollouts.completion_ids, rollouts.answers.tolist())


def assert_scores_equal(actual: Scores, expected: Scores) -> None:
    for name in ("boxed", "correct", "step", "combined", "reward"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)
        assert getattr(actual, name).dtype == np.float32


def config(**overrides: object) -> VerifierConfig:
    base: dict[str, object] = {"num_actors": 2, "num_cpus": 0.25, "chunk_size": CHUNK_SIZE, "deadline_s": 20.0}
    return VerifierConfig.model_validate(base | overrides)


def calls(scorer: InspectableScorer) -> int:
    return len(scorer.calls_file.read_text().splitlines()) if scorer.calls_file.exists() else 0


# ----------------------------------------------------------------------------------------------------------------


def test_scores_equal_the_direct_call_in_order_and_the_pool_is_reusable(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path))
    rollouts = make_rollouts()
    with VerifierPool(scorer, config(resource="verifier")) as pool:
        for _ in range(2):
            scored = pool.score(rollouts)
            assert scored.rollouts is rollouts
            assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))
            assert {k: v for k, v in scored.verifier_stats.items() if k != "verify/seconds"} == {
                "verify/timeouts": 0.0,
                "verify/retries": 0.0,
                "verify/errors": 0.0,
                "verify/respawns": 0.0,
                "verify/streamed": 0.0,
            }
        empty = pool.score(make_rollouts(0))
        assert empty.scores.reward.shape == (0,) and empty.scores.reward.dtype == np.float32


def test_chunks_finishing_out_of_order_are_reassembled_in_batch_order(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="slow_first")
    rollouts = make_rollouts()
    with VerifierPool(scorer, config()) as pool:
        scored = pool.score(rollouts)
    assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))


def test_a_scorer_error_is_rescored_on_a_fresh_actor(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="raise_once")
    rollouts = make_rollouts()
    with VerifierPool(scorer, config()) as pool:
        scored = pool.score(rollouts)
    assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))
    stats = scored.verifier_stats
    assert (stats["verify/errors"], stats["verify/retries"], stats["verify/respawns"]) == (1.0, 1.0, 1.0)
    assert stats["verify/timeouts"] == 0.0
    assert calls(scorer) == 3  # failed attempt, successful retry, and the direct reference call


def test_a_chunk_past_its_deadline_is_rescored_and_counted_as_timeout(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="sleep_once")
    rollouts = make_rollouts()
    with VerifierPool(scorer, config(deadline_s=2.0)) as pool:
        started = time.monotonic()
        scored = pool.score(rollouts)
        elapsed = time.monotonic() - started
    assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))
    stats = scored.verifier_stats
    assert stats["verify/timeouts"] == pytest.approx(1 / 4)  # one of four chunks
    assert (stats["verify/errors"], stats["verify/retries"], stats["verify/respawns"]) == (0.0, 1.0, 1.0)
    assert 2.0 <= elapsed < 60  # waited for the deadline, not for the 120 s sleep


def test_an_actor_that_dies_is_replaced_and_its_chunk_rescored(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="exit_once")
    rollouts = make_rollouts()
    with VerifierPool(scorer, config()) as pool:
        scored = pool.score(rollouts)
        again = pool.score(rollouts)  # the replacement keeps serving
    assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))
    assert_scores_equal(again.scores, scored.scores)
    stats = scored.verifier_stats
    assert (stats["verify/errors"], stats["verify/retries"], stats["verify/respawns"]) == (1.0, 1.0, 1.0)
    assert again.verifier_stats["verify/respawns"] == 0.0


def test_a_chunk_that_always_fails_raises_after_max_retries(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="always_raise")
    with VerifierPool(scorer, config(max_retries=2)) as pool:
        with pytest.raises(VerifierError, match=r"chunk 2 \(completions 6\.\.8\) failed 3 times \(max_retries=2\)"):
            pool.score(make_rollouts())
        assert calls(scorer) == 3
        with pytest.raises(VerifierError, match="verifier always broken"):
            pool.score(make_rollouts())


def test_malformed_scores_fail_at_once(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path), mode="short")
    with VerifierPool(scorer, config()) as pool, pytest.raises(VerifierError, match="2 reward values for chunk 2"):
        pool.score(make_rollouts())
    assert calls(scorer) == 1  # a deterministic bug is not retried


def test_misaligned_rollouts_are_rejected() -> None:
    rollouts = make_rollouts()
    rollouts.answers = rollouts.answers[:-1]
    with VerifierPool(length_scorer, config(num_actors=1)) as pool, pytest.raises(ValueError, match="11, 11, 10"):
        pool.score(rollouts)


def test_an_actor_that_cannot_be_placed_fails_loudly() -> None:
    cfg = config(num_actors=1, resource="no_such_resource")
    pool = VerifierPool(length_scorer, cfg, actor_start_timeout_s=1.0)
    with pool, pytest.raises(VerifierError, match=r"did not start within 1s.*'no_such_resource'"):
        pool.score(make_rollouts())


def test_a_shut_down_pool_refuses_to_score() -> None:
    pool = VerifierPool(length_scorer, config(num_actors=1))
    pool.shutdown()
    with pytest.raises(VerifierError, match="shut down"):
        pool.score(make_rollouts())


class UnloadableScorer:
    """Unpickles only in the test process, so the actor's constructor fails."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_load_only_in, (os.getpid(),))

    def __call__(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], answers: Sequence[int]) -> Scores:
        return length_scorer(prompt_ids, completion_ids, answers)


def _load_only_in(pid: int) -> UnloadableScorer:
    if os.getpid() != pid:
        raise RuntimeError("scorer cannot be loaded in this process")
    return UnloadableScorer()


def test_an_actor_whose_constructor_fails_reports_the_cause() -> None:
    pool = VerifierPool(UnloadableScorer(), config(num_actors=1))
    with pool, pytest.raises(VerifierError, match=r"failed to start.*scorer cannot be loaded in this process"):
        pool.score(make_rollouts())


# ----------------------------------------------------------------------------------------------------------------
# Streaming: shares scored as they are generated


@ray.remote
def _generate_share(rollouts: RolloutBatch, start: int, stop: int, delay_s: float, fail: bool) -> tuple:
    """Stands in for a rollout actor's ``generate`` of prompts start:stop (one completion per prompt)."""
    time.sleep(delay_s)
    if fail:
        raise RuntimeError("rollout actor died")
    completions = [
        Completion(i - start, rollouts.completion_ids[i], rollouts.logprobs[i]) for i in range(start, stop)
    ]
    return completions, 0, delay_s


def pending_generation(rollouts: RolloutBatch, delay_s: float = 0.0, fail_second: bool = False) -> PendingRollout:
    prompts = PromptBatch(rollouts.prompt_ids, rollouts.answers, rollouts.complexities)
    shares = [_Share(0, 0, 6), _Share(1, 6, len(rollouts))]
    fails = [False, fail_second]
    refs = {_generate_share.remote(rollouts, s.start, s.stop, delay_s, fails[s.actor_index]): s for s in shares}
    return PendingRollout(prompts, SamplingSpec(n=1), shares, refs, time.perf_counter())


def test_streamed_scores_are_queued_before_generation_ends_and_equal_the_direct_call(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path))
    rollouts = make_rollouts()
    with VerifierPool(scorer, config()) as pool:
        pending = pending_generation(rollouts, delay_s=2.0)
        started = time.monotonic()
        prescored = pool.prescore(pending)
        assert time.monotonic() - started < 1.0  # queued, not waited for
        scored = pool.score(rollouts, prescored)
        assert scored.verifier_stats["verify/streamed"] == 1.0
        assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))


def test_a_failed_share_falls_back_to_scoring_the_collected_batch(tmp_path: Path) -> None:
    scorer = InspectableScorer(str(tmp_path))
    rollouts = make_rollouts()  # what the group collected after re-running the failed share elsewhere
    with VerifierPool(scorer, config()) as pool:
        scored = pool.score(rollouts, pool.prescore(pending_generation(rollouts, fail_second=True)))
        assert scored.verifier_stats["verify/streamed"] == 0.0
        assert_scores_equal(scored.scores, direct_scores(scorer, rollouts))



def test_docstring_examples_run() -> None:
    """The pool's examples, on this module's Ray (tests/test_doctests.py leaves out modules that start Ray)."""
    import doctest

    from rlvr_ray.verify import pool

    result = doctest.testmod(pool, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
