"""Golden outputs: fixed seeds give exactly these problems (each one checked by hand against the reduction rule).

A failure here means the random stream changed (jax PRNG defaults, the sampler, key derivation): every seed's
data set changes with it, so it must be a deliberate decision, with these values regenerated and re-checked.
"""

from __future__ import annotations

import pytest

from rlvr_ray.task.reference import evaluate, parse_prompt, target_completion
from rlvr_ray.task.rpn import generate_problems
from rlvr_ray.task.vocab import Vocab

GOLDEN = [
    (
        (13, ("+", "-", "*"), 6, (1, 4), 0),
        [
            ("<boe> 0 2 * 7 +", "= 0 7 + = 7 <eoe>", 7, 2),
            ("<boe> 12 0 -", "= 12 <eoe>", 12, 1),
            ("<boe> 6 2 - 7 4 - *", "= 4 3 * = 12 <eoe>", 12, 3),  # two disjoint triples in one pass
            ("<boe> 11 1 8 * + 5 +", "= 11 8 + 5 + = 6 5 + = 11 <eoe>", 11, 3),  # 11+8 = 19 = 6
            ("<boe> 9 6 4 + +", "= 9 10 + = 6 <eoe>", 6, 2),
            ("<boe> 12 0 11 + + 8 *", "= 12 11 + 8 * = 10 8 * = 2 <eoe>", 2, 3),  # 23 = 10, 80 = 2
        ],
    ),
    (
        (7, ("*", "+"), 4, (3, 3), 123),  # operator ids: * = 7, + = 8
        [
            ("<boe> 4 3 2 + * 6 *", "= 4 5 * 6 * = 6 6 * = 1 <eoe>", 1, 3),  # 20 = 6, 36 = 1
            ("<boe> 6 3 2 * 2 * *", "= 6 6 2 * * = 6 5 * = 2 <eoe>", 2, 3),  # no chaining: "6 2 *" waits a pass
            ("<boe> 4 6 2 * + 4 *", "= 4 5 + 4 * = 2 4 * = 1 <eoe>", 1, 3),
            ("<boe> 3 4 4 3 * * *", "= 3 4 5 * * = 3 6 * = 4 <eoe>", 4, 3),
        ],
    ),
    (
        (13, ("+",), 3, (1, 2), 2**40),  # a seed above 32 bits
        [
            ("<boe> 11 7 7 + +", "= 11 1 + = 12 <eoe>", 12, 2),
            ("<boe> 0 10 + 2 +", "= 10 2 + = 12 <eoe>", 12, 2),
            ("<boe> 2 4 + 11 +", "= 6 11 + = 4 <eoe>", 4, 2),
        ],
    ),
]


@pytest.mark.parametrize(("request_", "expected"), GOLDEN, ids=["p13-seed0", "p7-seed123", "p13-seed2^40"])
def test_golden(request_: tuple, expected: list[tuple[str, str, int, int]]) -> None:
    p, operators, n, complexity_range, seed = request_
    vocab = Vocab(p, operators)
    problems = generate_problems(vocab, n, complexity_range, seed)
    got = [
        (vocab.decode(prompt), vocab.decode(completion), int(answer), int(k))
        for prompt, completion, answer, k in zip(
            problems.prompt_lists(), problems.completion_lists(), problems.answers, problems.complexities, strict=False
        )
    ]
    assert got == expected


@pytest.mark.parametrize(("request_", "expected"), GOLDEN, ids=["p13-seed0", "p7-seed123", "p13-seed2^40"])
def test_golden_values_agree_with_reference(request_: tuple, expected: list[tuple[str, str, int, int]]) -> None:
    # the written-down values are themselves right (independently of the JAX code that produced them)
    vocab = Vocab(request_[0], request_[1])
    for prompt, completion, answer, k in expected:
        expr = parse_prompt(vocab.encode(prompt), vocab)
        assert vocab.decode(target_completion(expr, vocab)) == completion
        assert evaluate(expr, vocab) == answer and len(expr) == 2 * k + 1


def test_spec_examples_through_the_jax_reduction() -> None:
    import numpy as np

    from rlvr_ray.task.rpn import reduce_pass

    vocab = Vocab(13, ("+", "-", "*"))
    rows = np.full((2, 5), vocab.pad, dtype=np.int32)
    rows[0] = vocab.encode("3 4 + 2 *")
    rows[1] = vocab.encode("5 6 7 + *")
    once, lengths = (np.asarray(a) for a in reduce_pass(rows, vocab))
    assert [vocab.decode(r[:n].tolist()) for r, n in zip(once, lengths, strict=True)] == ["7 2 *", "5 0 *"]
    twice, lengths = (np.asarray(a) for a in reduce_pass(once, vocab))
    assert [vocab.decode(r[:n].tolist()) for r, n in zip(twice, lengths, strict=True)] == ["1", "0"]
