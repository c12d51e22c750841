"""The train/eval split: the vectorised hash equals the plain-Python one, training streams never hold an eval
prompt, and the held-out sets are distinct eval prompts (all of them where the split is small)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rlvr_ray.task import heldout, rpn
from rlvr_ray.task import reference as ref
from rlvr_ray.task.prompts import PromptSampler
from rlvr_ray.task.split import EVAL_FRACTION, in_eval_split, is_eval_reference, prompt_hash, prompt_hash_reference
from rlvr_ray.task.vocab import Vocab

V13 = Vocab(13, ("+", "-", "*"))


def eval_prompts_in(prompts: list[list[int]]) -> list[list[int]]:
    """The prompts the plain-Python reference puts in the eval split."""
    return [p for p in prompts if is_eval_reference(p)]


def test_vectorised_hash_equals_the_reference_and_ignores_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 15, size=500)
    prompts = rng.integers(0, 20, size=(500, 14)).astype(np.int32)
    got = prompt_hash(prompts, lengths)
    assert got.tolist() == [prompt_hash_reference(row[:n].tolist()) for row, n in zip(prompts, lengths, strict=True)]
    garbage = np.where(np.arange(14) < lengths[:, None], prompts, rng.integers(0, 99, size=prompts.shape))
    assert (prompt_hash(garbage, lengths) == got).all()  # only the real tokens enter
    salted = prompt_hash(prompts, lengths, salt=-7)
    rows = zip(prompts, lengths, strict=True)
    assert salted.tolist() == [prompt_hash_reference(row[:n].tolist(), -7) for row, n in rows]
    assert (salted != got).mean() > 0.99


def test_the_hash_itself_is_fixed() -> None:
    # changing the hash moves every prompt between the splits (and invalidates every warm start): deliberate only
    assert prompt_hash_reference(V13.encode("<boe> 12 0 -")) == 0x79317B9BBC516579
    assert prompt_hash_reference(V13.encode("<boe> 9 6 4 + +")) == 0x22134610A27871A2  # < 0.2 * 2**64: eval


def test_about_the_eval_fraction_of_each_complexity_is_held_out() -> None:
    for k, (low, high) in {1: (0.14, 0.26), 2: (0.19, 0.21)}.items():  # 507 and 39546 prompts
        exprs = heldout.enumerate_expressions(V13, k)
        prompts = np.concatenate([np.full((len(exprs), 1), V13.boe), exprs], axis=1)
        share = in_eval_split(prompts, np.full(len(exprs), 2 * k + 2)).mean()
        assert low < share < high, (k, share, EVAL_FRACTION)


@pytest.mark.parametrize("seed", [0, 1, 2**40])
def test_train_split_stream_is_the_full_stream_without_eval_prompts(seed: int) -> None:
    full = rpn.generate_problems(V13, 400, (1, 4), seed)
    keep = [i for i, p in enumerate(full.prompt_lists()) if not is_eval_reference(p)]
    train = rpn.generate_problems(V13, 150, (1, 4), seed, split="train")
    assert train.prompt_lists() == [full.prompt_lists()[i] for i in keep[:150]]
    assert train.completion_lists() == [full.completion_lists()[i] for i in keep[:150]]
    assert train.answers.tolist() == full.answers[keep[:150]].tolist()
    held = rpn.generate_problems(V13, 40, (1, 4), seed, split="eval")
    assert held.prompt_lists() == [p for p in full.prompt_lists() if is_eval_reference(p)][:40]
    # still prefix-stable: problem i does not depend on how many were asked for
    assert rpn.generate_problems(V13, 7, (1, 4), seed, split="train").prompt_lists() == train.prompt_lists()[:7]


def test_golden_train_split() -> None:
    # the p13 seed-0 golden stream (test_rpn_golden): its 5th prompt is the only eval prompt of the first six
    train = rpn.generate_problems(V13, 5, (1, 4), 0, split="train")
    assert [V13.decode(p) for p in train.prompt_lists()] == [
        "<boe> 0 2 * 7 +", "<boe> 12 0 -", "<boe> 6 2 - 7 4 - *", "<boe> 11 1 8 * + 5 +", "<boe> 12 0 11 + + 8 *",
    ]  # fmt: skip
    assert V13.decode(rpn.generate_problems(V13, 1, (1, 4), 0, split="eval").prompt_lists()[0]) == "<boe> 9 6 4 + +"


def test_rl_prompt_sampler_never_samples_an_eval_prompt() -> None:
    sampler = PromptSampler(V13, (1, 2), prompts_per_step=64, seed=3, max_prompt_length=32)
    prompts = [p for step in range(60) for p in sampler.sample(step).prompt_ids]
    assert len(prompts) == 3840
    assert eval_prompts_in(prompts) == []
    # at k=1 the sampler covers (almost) the whole train side: 3840 draws, about 1900 of them at k=1
    k1 = {tuple(p) for p in prompts if len(p) == 4}
    assert len(k1) > 380


def test_split_draw_fails_loudly_when_its_side_is_empty() -> None:
    tiny = Vocab(2, ("*",))  # k=1 has 4 prompts, none of them in the eval split
    exprs = [[tiny.boe, a, b, tiny.first_operator] for a, b in itertools.product(range(2), repeat=2)]
    assert eval_prompts_in(exprs) == []
    with pytest.raises(ValueError, match="too few prompts"):
        rpn.generate_problems(tiny, 3, (1, 1), 0, split="eval")
    assert len(rpn.generate_problems(tiny, 3, (1, 1), 0, split="train")) == 3
    empty = heldout.distinct_problems(tiny, 1, 10, seed=0, split="eval")
    assert (len(empty.problems), empty.in_split, empty.exhausted) == (0, 0, True)


def test_enumerated_space_is_every_expression_exactly_once() -> None:
    for vocab, k in [(Vocab(3, ("+", "*")), 1), (Vocab(3, ("+", "*")), 2), (Vocab(2, ("-",)), 3)]:
        exprs = heldout.enumerate_expressions(vocab, k)
        assert len(exprs) == heldout.space_size(vocab, k) == len({tuple(r) for r in exprs.tolist()})
        assert all(ref.is_expression(row, vocab) for row in exprs.tolist())
    assert [len(heldout.rpn_shapes(k)) for k in range(1, 6)] == [1, 2, 5, 14, 42]


def test_problems_from_expressions_match_the_reference() -> None:
    exprs = heldout.enumerate_expressions(V13, 2)[::97]
    problems = rpn.problems_from_expressions(V13, exprs)
    for expr, completion, answer in zip(exprs.tolist(), problems.completion_lists(), problems.answers, strict=True):
        assert completion == ref.target_completion(expr, V13) and answer == ref.evaluate(expr, V13)
    assert problems.prompt_lists() == [[V13.boe, *e] for e in exprs.tolist()]


def test_held_out_set_of_a_small_space_is_all_of_its_eval_split() -> None:
    by_hand = [[V13.boe, a, b, op] for a in range(13) for b in range(13) for op in (13, 14, 15)]
    expected = sorted(eval_prompts_in(by_hand))  # 107 of 507
    got = heldout.distinct_problems(V13, 1, 200, seed=5, split="eval")
    assert sorted(got.problems.prompt_lists()) == expected
    assert (got.space, got.in_split, got.exhausted) == (507, len(expected), True)
    part = heldout.distinct_problems(V13, 1, 30, seed=5, split="eval")
    other = heldout.distinct_problems(V13, 1, 30, seed=6, split="eval")
    assert len({tuple(p) for p in part.problems.prompt_lists()}) == 30 and not part.exhausted
    assert set(map(tuple, part.problems.prompt_lists())) <= set(map(tuple, expected))
    assert part.problems.prompt_lists() != other.problems.prompt_lists()  # the seed picks which


def test_held_out_set_of_a_large_space_is_distinct_eval_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    got = heldout.distinct_problems(V13, 3, 300, seed=1, split="eval")  # 3.9M prompts: sampled
    prompts = got.problems.prompt_lists()
    assert len(prompts) == len({tuple(p) for p in prompts}) == 300
    assert eval_prompts_in(prompts) == prompts and got.in_split is None and not got.exhausted
    # the sampled path draws without replacement even where duplicates are common (forced on k=1)
    monkeypatch.setattr(heldout, "ENUMERATE_LIMIT", 0)
    small = heldout.distinct_problems(V13, 1, 60, seed=1, split="eval").problems.prompt_lists()
    assert len(small) == len({tuple(p) for p in small}) == 60 and eval_prompts_in(small) == small


def test_problems_take() -> None:
    problems = rpn.generate_problems(V13, 50, (1, 4), 9)
    idx = [i for i, k in enumerate(problems.complexities) if k == 1][:5]
    taken = problems.take(idx)
    assert taken.prompt_lists() == [problems.prompt_lists()[i] for i in idx]
    assert taken.prompts.shape == (5, 4) and taken.completions.shape[1] == int(taken.completion_lengths.max())
