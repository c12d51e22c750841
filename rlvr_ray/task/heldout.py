"""Fixed sets of *distinct* problems of one complexity from one side of the train/eval split.

The held-out evaluation draws its problems here from the eval split; the SFT probe draws from the train split.
Where a complexity's prompt space is small (at most ``ENUMERATE_LIMIT`` prompts, e.g. k <= 2 at p=13 with three
operators), every prompt is listed, the split's prompts are kept and ``n`` of them are taken in a seeded hash
order; where the split has fewer than ``n``, all of them are used (``ProblemSet.exhausted``). Larger spaces are
sampled from the process, duplicates dropped, until ``n`` distinct problems are found.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from rlvr_ray.task.problems import Problems
from rlvr_ray.task.split import Split, prompt_hash, split_mask
from rlvr_ray.task.vocab import Vocab

ENUMERATE_LIMIT = 1 << 17
"""Complexities with at most this many prompts are listed in full (so "all of the split" is exact)."""
MAX_DRAW_ROUNDS = 8
"""Rounds of doubling the draw in a large space before giving up with fewer than n (then all distinct found)."""


@dataclass
class ProblemSet:
    """Distinct problems of one complexity from one split, and how big that part of the prompt space is.

    space:     number of distinct prompts of this complexity (the whole prompt space, both splits).
    in_split:  number of them in the split, when the space was listed in full (None: too many to list).
    exhausted: True when every prompt of the split is in ``problems`` (the split had no more than n).
    """

    problems: Problems
    space: int
    in_split: int | None
    exhausted: bool


def catalan(k: int) -> int:
    return math.comb(2 * k, k) // (k + 1)


def space_size(vocab: Vocab, k: int) -> int:
    """Distinct expressions of complexity k: operands^(k+1) x operators^k x Catalan(k) shapes."""
    return vocab.p ** (k + 1) * len(vocab.operators) ** k * catalan(k)


def rpn_shapes(k: int) -> np.ndarray:
    """[Catalan(k), 2k+1] bool, True where an operand goes, for every valid RPN shape with k operators."""
    width = 2 * k + 1
    shapes = []
    for operator_positions in itertools.combinations(range(2, width), k):
        row = np.ones(width, dtype=bool)
        row[list(operator_positions)] = False
        depth = np.cumsum(np.where(row, 1, -1))
        if depth.min() >= 1:  # every operator finds two values on the stack, and one value is left
            shapes.append(row)
    return np.array(shapes, dtype=bool).reshape(-1, width)


def _digits(count: int, base: int, places: int) -> np.ndarray:
    """[count, places] base-``base`` digits of 0..count-1, most significant first."""
    values = np.arange(count, dtype=np.int64)
    powers = base ** np.arange(places - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % base


def enumerate_expressions(vocab: Vocab, k: int) -> np.ndarray:
    """Every expression of complexity k as ids [space_size, 2k+1] int32 (shape-major, then operands, operators)."""
    operands = _digits(vocab.p ** (k + 1), vocab.p, k + 1)
    operators = vocab.first_operator + _digits(len(vocab.operators) ** k, len(vocab.operators), k)
    blocks = []
    for shape in rpn_shapes(k):
        block = np.empty((len(operands), len(operators), 2 * k + 1), dtype=np.int32)
        block[:, :, shape] = operands[:, None, :]
        block[:, :, ~shape] = operators[None, :, :]
        blocks.append(block.reshape(-1, 2 * k + 1))
    return np.concatenate(blocks)


def _prompts(vocab: Vocab, exprs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prompts = np.concatenate([np.full((len(exprs), 1), vocab.boe, dtype=np.int32), exprs], axis=1)
    return prompts, np.full(len(exprs), prompts.shape[1], dtype=np.int32)


def distinct_problems(vocab: Vocab, k: int, n: int, seed: int, split: Split) -> ProblemSet:
    """Up to ``n`` distinct problems of complexity k from ``split``, fixed by (vocab, k, n, seed, split)."""
    from rlvr_ray.task.rpn import problems_from_expressions

    if k < 1 or n < 0:
        raise ValueError(f"need complexity >= 1 and n >= 0, got k={k}, n={n}")
    space = space_size(vocab, k)
    if space > ENUMERATE_LIMIT:
        return _sampled(vocab, k, n, seed, split, space)
    exprs = enumerate_expressions(vocab, k)
    prompts, lengths = _prompts(vocab, exprs)
    keep = split_mask(prompts, lengths, split)
    order = np.argsort(prompt_hash(prompts[keep], lengths[keep], salt=seed), kind="stable")  # a seeded shuffle
    chosen = exprs[keep][order[:n]]
    return ProblemSet(problems_from_expressions(vocab, chosen), space, int(keep.sum()), int(keep.sum()) <= n)


def _sampled(vocab: Vocab, k: int, n: int, seed: int, split: Split, space: int) -> ProblemSet:
    """The first n distinct problems of the split's stream (the process is uniform over the space, so this is a
    uniform draw without replacement)."""
    from rlvr_ray.task.rpn import generate_problems

    count = n + n // 4 + 16
    for _ in range(MAX_DRAW_ROUNDS):
        problems = generate_problems(vocab, count, (k, k), seed, split)
        _, first = np.unique(problems.prompts, axis=0, return_index=True)
        distinct = np.sort(first)
        if len(distinct) >= n:
            break
        count *= 2
    return ProblemSet(problems.take(distinct[:n]), space, None, False)
