"""The plain-Python reduction: the spec's examples, its edge cases, and an independent stack evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from rlvr_ray.task.reference import (
    apply_operator,
    evaluate,
    is_expression,
    parse_prompt,
    reduce_once,
    reduction_chain,
    target_completion,
)
from rlvr_ray.task.vocab import Vocab

V13 = Vocab(13, ("+", "-", "*"))


def chain_text(text: str, vocab: Vocab = V13) -> list[str]:
    return [vocab.decode(step) for step in reduction_chain(vocab.encode(text), vocab)]


def test_spec_examples() -> None:
    assert chain_text("3 4 + 2 *") == ["7 2 *", "1"]
    assert chain_text("5 6 7 + *") == ["5 0 *", "0"]
    assert V13.decode(target_completion(V13.encode("3 4 + 2 *"), V13)) == "= 7 2 * = 1 <eoe>"


def test_pass_does_not_chain_within_a_pass() -> None:
    # after "1 2 +" -> 3 the scan continues after the triple, so "3 3 +" is left for the next pass
    assert V13.decode(reduce_once(V13.encode("1 2 + 3 + 4 +"), V13)) == "3 3 + 4 +"
    assert chain_text("1 2 + 3 + 4 +") == ["3 3 + 4 +", "6 4 +", "10"]


def test_every_disjoint_triple_reduces_in_one_pass() -> None:
    assert V13.decode(reduce_once(V13.encode("1 2 + 3 4 * -"), V13)) == "3 12 -"
    assert chain_text("1 2 + 3 4 * - 5 6 * +") == ["3 12 - 4 +", "4 4 +", "8"]


def test_subtraction_is_non_negative_mod_p() -> None:
    assert chain_text("3 5 -") == ["11"]
    assert apply_operator("-", 0, 12, 13) == 1
    assert apply_operator("*", 12, 12, 13) == 1
    assert apply_operator("+", 12, 12, 13) == 11
    with pytest.raises(ValueError, match="unknown operator"):
        apply_operator("/", 1, 2, 13)


def test_operator_ids_follow_configured_order() -> None:
    v = Vocab(7, ("*", "-"))  # "*" is id 7, "-" is id 8
    assert v.decode(reduce_once([3, 4, 7], v)) == "5"
    assert v.decode(reduce_once([3, 4, 8], v)) == "6"


def test_single_operand_has_empty_chain() -> None:
    assert reduction_chain([5], V13) == []
    assert evaluate([5], V13) == 5
    assert target_completion([5], V13) == [V13.eoe]


@pytest.mark.parametrize("text", ["", "3 4", "3 +", "+ 3 4", "3 4 + +", "3 4 + =", "3 4 <eoe> +"])
def test_invalid_expressions_raise(text: str) -> None:
    ids = V13.encode(text)
    assert not is_expression(ids, V13)
    with pytest.raises(ValueError, match="not a valid RPN expression"):
        reduction_chain(ids, V13)


def test_out_of_range_ids_are_not_expressions_and_reduce_once_copies_them() -> None:
    assert not is_expression([3, 4, -1], V13)
    assert not is_expression([3, 4, 99], V13)
    assert reduce_once([3, 4, 99, -1, 1, 2, 13], V13) == [3, 4, 99, -1, 3]


def test_parse_prompt() -> None:
    assert parse_prompt(V13.encode("<boe> 3 4 + <pad> <pad>"), V13) == V13.encode("3 4 +")
    for bad in ["3 4 +", "<boe>", "<boe> 3 4", "<boe> <boe> 3", ""]:
        with pytest.raises(ValueError, match="prompt"):
            parse_prompt(V13.encode(bad), V13)


def stack_evaluate(ids: list[int], vocab: Vocab) -> int:
    """Classic RPN evaluation, independent of the pass-based reduction."""
    stack: list[int] = []
    for t in ids:
        if vocab.is_operand(t):
            stack.append(t)
        else:
            b, a = stack.pop(), stack.pop()
            stack.append(apply_operator(vocab.operator_symbol(t), a, b, vocab.p))
    (value,) = stack
    return value


def random_expression(rng: np.random.Generator, k: int, vocab: Vocab) -> list[int]:
    """Any valid expression (shape need not be uniform here): push operands, reduce when allowed."""
    out, depth, operands_left = [], 0, k + 1
    while operands_left or depth > 1:
        if depth >= 2 and (not operands_left or rng.random() < 0.5):
            out.append(vocab.first_operator + int(rng.integers(len(vocab.operators))))
            depth -= 1
        else:
            out.append(int(rng.integers(vocab.p)))
            depth, operands_left = depth + 1, operands_left - 1
    return out


@pytest.mark.parametrize("vocab", [V13, Vocab(2, ("*",)), Vocab(7, ("-", "+")), Vocab(101, ("*", "-", "+"))])
def test_chain_value_equals_stack_evaluation(vocab: Vocab) -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        k = int(rng.integers(1, 8))
        expr = random_expression(rng, k, vocab)
        chain = reduction_chain(expr, vocab)
        assert 1 <= len(chain) <= k
        assert [len(step) for step in chain] == sorted({len(step) for step in chain}, reverse=True)
        assert all(is_expression(step, vocab) for step in chain)
        assert len(chain[-1]) == 1
        assert evaluate(expr, vocab) == stack_evaluate(expr, vocab)
