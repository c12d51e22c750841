"""Rewards: hand examples for each, true chains scoring 1.0, and properties (never raise, step == 1 iff exact)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlvr_ray.task.reference import parse_prompt, reduction_chain
from rlvr_ray.task.rpn import generate_problems
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Scores
from rlvr_ray.verify.rewards import REWARD_TYPES, boxed, chain_exact, correct, score_batch, step_reward

V = Vocab(13, ("+", "-", "*"))
PROMPT = V.encode("<boe> 3 4 + 2 *")  # chain: "7 2 *", "1"


def enc(text: str) -> list[int]:
    return V.encode(text)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("= 7 2 * = 1 <eoe>", 1.0),
        ("= 5 <eoe>", 1.0),
        ("= 7 2 * = 12 <eoe>", 1.0),  # format only: a wrong value is still boxed
        ("1 <eoe>", 0.0),  # <eoe> at position 1
        ("= 1", 0.0),  # no <eoe>
        ("= + <eoe>", 0.0),  # not an operand
        ("7 1 <eoe>", 0.0),  # no "=" before the operand
        ("= 1 <eoe> 5 <eoe>", 0.0),  # the LAST <eoe> decides
        ("<eoe> = 1 <eoe>", 1.0),
        ("", 0.0),
        ("<eoe>", 0.0),
    ],
)
def test_boxed(completion: str, expected: float) -> None:
    assert boxed(enc(completion), V) == expected


def test_correct() -> None:
    assert correct(enc("= 7 2 * = 1 <eoe>"), 1, V) == 1.0
    assert correct(enc("= 7 2 * = 1 <eoe>"), 2, V) == 0.0
    assert correct(enc("= 1"), 1, V) == 0.0  # right value, not boxed
    assert correct(enc("= 2 <eoe> = 1 <eoe>"), 1, V) == 1.0  # the last <eoe> decides
    assert correct(enc("= 1 <eoe> 1 <eoe>"), 1, V) == 0.0
    assert correct(enc("= 1 <eoe>"), np.int64(1), V) == 1.0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("= 7 2 * = 1 <eoe>", 1.0),
        ("= 7 2 * = 1 <eoe> = 3 <eoe>", 1.0),  # what follows the first <eoe> is ignored
        ("= 7 2 * = 2 <eoe>", 0.5),  # first step right, last wrong
        ("= 7 2 * <eoe>", 0.5),  # stopped after a correct first step
        ("= 7 2 * = 1", 0.5),  # truncated: the last segment is not known to be complete
        ("= 7 2 *", 0.0),
        ("= 7 2 * = 1 = 1 <eoe>", 0.5),  # En must be followed by <eoe>
        ("= 7 2 * 5 = 1 <eoe>", 0.0),  # extra token inside E1
        ("= 1 <eoe>", 0.0),  # skipped a step
        ("7 2 * = 1 <eoe>", 0.0),  # must start with "="
        ("= 7 2 + = 1 <eoe>", 0.0),  # an error stops the count even if later steps are right
        ("", 0.0),
    ],
)
def test_step_reward(completion: str, expected: float) -> None:
    assert step_reward(PROMPT, enc(completion), V) == expected


def test_step_reward_counts_a_longer_chain_in_thirds() -> None:
    prompt = enc("<boe> 1 2 + 3 + 4 +")  # "3 3 + 4 +", "6 4 +", "10"
    assert step_reward(prompt, enc("= 3 3 + 4 + = 6 4 + = 10 <eoe>"), V) == 1.0
    assert step_reward(prompt, enc("= 3 3 + 4 + = 6 4 + = 11 <eoe>"), V) == pytest.approx(2 / 3)
    assert step_reward(prompt, enc("= 3 3 + 4 + = 10 <eoe>"), V) == pytest.approx(1 / 3)


@pytest.mark.parametrize("prompt", ["3 4 +", "<boe>", "<boe> 3 4", "<boe> 5", "", "<boe> 3 4 + =", "<eoe> 3 4 +"])
def test_malformed_prompts_score_zero_step(prompt: str) -> None:
    assert step_reward(enc(prompt), enc("= 7 <eoe>"), V) == 0.0
    assert not chain_exact(enc(prompt), enc("= 7 <eoe>"), V)


def test_chain_exact() -> None:
    assert chain_exact(PROMPT, enc("= 7 2 * = 1 <eoe>"), V)
    assert chain_exact(PROMPT, enc("= 7 2 * = 1 <eoe> 3 <eoe>"), V)  # up to the first <eoe>
    assert not chain_exact(PROMPT, enc("= 7 2 * = 1"), V)
    assert not chain_exact(PROMPT, enc("= 1 <eoe>"), V)
    assert not chain_exact(PROMPT, enc("= 7 2 * = 1 = 1 <eoe>"), V)
    assert chain_exact(enc("<boe> 3 4 + 2 * <pad> <pad>"), enc("= 7 2 * = 1 <eoe>"), V)  # trailing pads ignored


def test_score_batch_selects_and_weights() -> None:
    prompts = [PROMPT] * 4
    completions = [enc(t) for t in ["= 7 2 * = 1 <eoe>", "= 7 2 * = 2 <eoe>", "= 7 2 *", "= 1 <eoe>"]]
    answers = [1, 1, 1, 1]
    scores = score_batch(prompts, completions, answers, V, "combined", 0.3, 0.7)
    assert isinstance(scores, Scores)
    for name in ("boxed", "correct", "step", "combined", "reward"):
        array = getattr(scores, name)
        assert array.dtype == np.float32 and array.shape == (4,)
    assert scores.boxed.tolist() == [1, 1, 0, 1]
    assert scores.correct.tolist() == [1, 0, 0, 1]
    assert scores.step.tolist() == [1, 0.5, 0, 0]
    np.testing.assert_allclose(scores.combined, [1.0, 0.3, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(scores.reward, scores.combined)
    for reward_type in REWARD_TYPES:
        picked = score_batch(prompts, completions, answers, V, reward_type, 0.5, 2.0)
        np.testing.assert_array_equal(picked.reward, getattr(picked, reward_type))
    np.testing.assert_allclose(score_batch(prompts, completions, answers, V, "combined", 0.5, 2.0).combined,
                               [2.5, 0.5, 0.0, 2.5])  # fmt: skip


def test_score_batch_rejects_bad_calls() -> None:
    with pytest.raises(ValueError, match="boxed, correct, combined, step"):
        score_batch([], [], [], V, "accuracy", 0.3, 0.7)
    with pytest.raises(ValueError, match="as many"):
        score_batch([PROMPT], [], [1], V, "boxed", 0.3, 0.7)
    empty = score_batch([], [], [], V, "step", 0.3, 0.7)
    assert empty.reward.shape == (0,) and empty.reward.dtype == np.float32


@pytest.mark.parametrize("vocab", [V, Vocab(5, ("*", "-")), Vocab(17, ("+",))], ids=lambda v: f"p{v.p}")
def test_true_chains_score_one_everywhere(vocab: Vocab) -> None:
    problems = generate_problems(vocab, 300, (1, 5), seed=8)
    prompts, completions = problems.prompt_lists(), problems.completion_lists()
    for reward_type in REWARD_TYPES:
        scores = score_batch(prompts, completions, problems.answers, vocab, reward_type, 0.3, 0.7)
        np.testing.assert_allclose(scores.reward, 1.0, rtol=1e-6)
    assert all(chain_exact(p, c, vocab) for p, c in zip(prompts, completions, strict=True))
    # and each strict prefix of a true completion falls short of 1.0 on step and on chain_exact
    for prompt, completion in zip(prompts[:50], completions[:50], strict=True):
        for cut in range(len(completion)):
            assert step_reward(prompt, completion[:cut], vocab) < 1.0
            assert not chain_exact(prompt, completion[:cut], vocab)


def test_score_batch_is_deterministic_and_pure() -> None:
    problems = generate_problems(V, 64, (1, 4), seed=1)
    prompts = problems.prompt_lists()
    rng = np.random.default_rng(0)
    completions = [rng.integers(-2, V.size + 2, size=rng.integers(0, 12)).tolist() for _ in prompts]
    kept = [list(c) for c in completions]
    a = score_batch(prompts, completions, problems.answers, V, "step", 0.3, 0.7)
    b = score_batch(prompts, completions, problems.answers, V, "step", 0.3, 0.7)
    for name in ("boxed", "correct", "step", "combined", "reward"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert completions == kept and prompts == problems.prompt_lists()  # inputs untouched


# ---------------------------------------------------------------------------------------------------------------
# Properties

ANY_IDS = st.lists(st.integers(min_value=-3, max_value=V.size + 3), max_size=30)


def expected_step(prompt: list[int], completion: list[int], vocab: Vocab) -> float:
    """An independent reading of the step reward: the largest m such that the completion begins with
    "= E1 ... = Em" followed by "=" or "<eoe>" (only "<eoe>" when m = n)."""
    try:
        chain = reduction_chain(parse_prompt(prompt, vocab), vocab)
    except ValueError:
        return 0.0
    if not chain:
        return 0.0
    best, head = 0, []
    for m, step in enumerate(chain, start=1):
        head = [*head, vocab.eq, *step]
        follow = completion[len(head) : len(head) + 1]
        allowed = [vocab.eoe] if m == len(chain) else [vocab.eq, vocab.eoe]
        if completion[: len(head)] == head and follow and follow[0] in allowed:
            best = m
    return best / len(chain)


@settings(max_examples=300, deadline=None)
@given(prompt=ANY_IDS, completion=ANY_IDS, answer=st.integers(min_value=-3, max_value=20))
def test_never_raise_on_any_ids(prompt: list[int], completion: list[int], answer: int) -> None:
    b, c = boxed(completion, V), correct(completion, answer, V)
    s = step_reward(prompt, completion, V)
    assert b in (0.0, 1.0) and c in (0.0, 1.0) and c <= b and 0.0 <= s <= 1.0
    assert (s == 1.0) == chain_exact(prompt, completion, V)
    scores = score_batch([prompt], [completion], [answer], V, "combined", 0.3, 0.7)
    assert scores.step[0] == np.float32(s) and scores.combined[0] == np.float32(0.3 * b + 0.7 * c)


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """A true (prompt, completion) pair with a few random edits: mostly almost-right chains."""
    index = draw(st.integers(0, len(TRUE_PROMPTS) - 1))
    completion = list(TRUE_COMPLETIONS[index])
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(completion)))
        token = draw(st.integers(-1, V.size))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "truncate"]))
        if kind == "insert":
            completion.insert(where, token)
        elif kind == "truncate":
            completion = completion[:where]
        elif where < len(completion):
            completion[where : where + 1] = [token] if kind == "replace" else []
    return TRUE_PROMPTS[index], completion


_TRUE = generate_problems(V, 64, (1, 5), seed=99)
TRUE_PROMPTS, TRUE_COMPLETIONS = _TRUE.prompt_lists(), _TRUE.completion_lists()


@settings(max_examples=300, deadline=None)
@given(pair=near_misses())
def test_step_reward_matches_independent_reading(pair: tuple[list[int], list[int]]) -> None:
    prompt, completion = pair
    s = step_reward(prompt, completion, V)
    assert s == pytest.approx(expected_step(prompt, completion, V))
    assert (s == 1.0) == chain_exact(prompt, completion, V)
