"""The JAX process: agreement with the reference, exact uniformity of shapes, reproducibility, the jit cache,
and the Problems record's conversions."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from math import comb

import jax
import numpy as np
import pytest

from rlvr_ray.task import reference as ref
from rlvr_ray.task import rpn
from rlvr_ray.task.problems import Problems
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import PromptBatch

V13 = Vocab(13, ("+", "-", "*"))
CONFIGS = [V13, Vocab(2, ("*",)), Vocab(5, ("-",)), Vocab(97, ("-", "+")), Vocab(7, ("*", "+", "-"))]


def catalan(k: int) -> int:
    return comb(2 * k, k) // (k + 1)


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square critical values at p = 1e-6 (4 and 13 degrees of freedom): a correct sampler essentially never
# exceeds them, a biased one with 20k samples exceeds them by far (see the naive sampler test).
CHI2_BOUND = {4: 33.4, 13: 52.0}


@pytest.fixture(scope="module")
def mixed() -> Problems:
    return rpn.generate_problems(V13, 600, (1, 6), seed=11)


@pytest.mark.parametrize("vocab", CONFIGS, ids=lambda v: f"p{v.p}{''.join(v.operators)}")
def test_generate_matches_reference(vocab: Vocab) -> None:
    problems = rpn.generate_problems(vocab, 800, (1, 6), seed=vocab.p)
    assert set(problems.complexities.tolist()) == set(range(1, 7))
    rows = zip(
        problems.prompt_lists(), problems.completion_lists(), problems.answers, problems.complexities, strict=True
    )
    for prompt, completion, answer, k in rows:
        expr = ref.parse_prompt(prompt, vocab)
        assert len(expr) == 2 * k + 1
        assert completion == ref.target_completion(expr, vocab)
        assert answer == ref.evaluate(expr, vocab)


def test_reduce_pass_matches_reference_on_arbitrary_sequences() -> None:
    # not only valid expressions: any operand/operator/other-token mix, of varying length, right-padded
    vocab = Vocab(5, ("+", "*"))
    rng = np.random.default_rng(1)
    width = 12
    lengths = rng.integers(0, width + 1, size=3000)
    pool = np.array([*range(vocab.p), vocab.p, vocab.p + 1, vocab.eq], dtype=np.int32)
    weights = np.array([0.1] * vocab.p + [0.2, 0.2, 0.1])
    tokens = rng.choice(pool, size=(3000, width), p=weights / weights.sum())
    tokens[np.arange(width) >= lengths[:, None]] = vocab.pad
    out, out_lengths = (np.asarray(a) for a in rpn.reduce_pass(tokens, vocab))
    for row, n, new, new_n in zip(tokens, lengths, out, out_lengths, strict=True):
        expected = ref.reduce_once(row[:n].tolist(), vocab)
        assert new[:new_n].tolist() == expected
        assert (new[new_n:] == vocab.pad).all()


def test_reduction_chains_public_api() -> None:
    vocab = Vocab(11, ("-", "*"))
    exprs = sample_many(3, 4, 200, vocab)
    chains, lengths = (np.asarray(a) for a in rpn.reduction_chains(exprs, vocab))
    assert chains.shape == (200, 5, 9) and lengths.shape == (200, 5)
    for expr, chain, lens in zip(exprs, chains, lengths, strict=True):
        steps = ref.reduction_chain(expr.tolist(), vocab)
        padded = steps + [steps[-1]] * (4 - len(steps))  # rows past En repeat En
        assert [row[:n].tolist() for row, n in zip(chain[1:], lens[1:], strict=True)] == padded
        assert chain[0].tolist() == expr.tolist()


def sample_many(seed: int, k: int, n: int, vocab: Vocab = V13, chunk: int = 1000) -> np.ndarray:
    """[n, 2k+1] expressions from sample_expressions, in chunks that all share one compiled batch size."""
    keys = jax.random.split(jax.random.key(seed), -(-n // chunk))
    parts = [rpn.sample_expressions(key, chunk, k, vocab.p, len(vocab.operators)) for key in keys]
    return np.concatenate([np.asarray(part) for part in parts])[:n]


@pytest.fixture(scope="module")
def by_k() -> Problems:
    return rpn.generate_problems(V13, 4500, (1, 5), seed=3)  # about 900 per k: one compiled bucket per k


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_generated_expressions_are_valid_and_cover_all_shapes(by_k: Problems, k: int) -> None:
    exprs = by_k.prompts[by_k.complexities == k, 1 : 2 * k + 2]
    assert all(ref.is_expression(row.tolist(), V13) for row in exprs)
    assert len({tuple(row < V13.p) for row in exprs}) == catalan(k)


def test_sample_expressions_shape_and_validity() -> None:
    vocab = Vocab(5, ("*", "-"))
    exprs = sample_many(9, 3, 1000, vocab)
    assert exprs.shape == (1000, 7) and exprs.dtype == np.int32
    assert all(ref.is_expression(row.tolist(), vocab) for row in exprs)
    assert set(np.unique(exprs).tolist()) == set(range(vocab.p + 2))


def shape_counts(is_operand: np.ndarray) -> np.ndarray:
    """Counts of each distinct shape (rows of a [N, 2k+1] bool array)."""
    return np.array(list(Counter(map(tuple, is_operand.astype(np.int8))).values()))


def naive_stack_shapes(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """The naive sampler: push an operand or apply an operator with probability 1/2 whenever both are allowed."""
    out = np.zeros((n, 2 * k + 1), dtype=bool)
    for row in out:
        depth, operands_left = 0, k + 1
        for i in range(2 * k + 1):
            push = operands_left > 0 and (depth < 2 or rng.random() < 0.5)
            row[i] = push
            depth, operands_left = (depth + 1, operands_left - 1) if push else (depth - 1, operands_left)
    return out


@pytest.mark.parametrize("k", [3, 4])
def test_shapes_are_uniform_over_catalan(k: int) -> None:
    counts = shape_counts(sample_many(100 + k, k, 20_000) < V13.p)
    assert len(counts) == catalan(k)
    assert chi_square(counts) < CHI2_BOUND[catalan(k) - 1]


@pytest.mark.parametrize("k", [3, 4])
def test_chi_square_bound_rejects_the_naive_sampler(k: int) -> None:
    # the uniformity test above has power: the naive random-stack sampler fails the same bound
    counts = shape_counts(naive_stack_shapes(np.random.default_rng(k), 20_000, k))
    assert len(counts) == catalan(k)
    assert chi_square(counts) > 10 * CHI2_BOUND[catalan(k) - 1]


def test_operands_operators_and_complexities_are_uniform() -> None:
    vocab = Vocab(7, ("*", "-"))
    problems = rpn.generate_problems(vocab, 4500, (1, 5), seed=5)
    assert chi_square(np.bincount(problems.complexities, minlength=6)[1:]) < CHI2_BOUND[4]
    prompts = problems.prompts[:, 1:]
    operands = prompts[prompts < vocab.p]
    operators = prompts[(prompts >= vocab.p) & (prompts < vocab.eq)]
    assert len(operands) == (problems.complexities + 1).sum() and len(operators) == problems.complexities.sum()
    assert chi_square(np.bincount(operands, minlength=vocab.p)) < 40.0  # 6 dof, p ~ 3e-7
    assert chi_square(np.bincount(operators - vocab.p, minlength=2)) < 25.0  # 1 dof, p ~ 6e-7


def test_problem_arrays(mixed: Problems) -> None:
    n = len(mixed)
    assert mixed.prompts.dtype == mixed.completions.dtype == np.int32
    assert mixed.prompt_lengths.tolist() == (2 * mixed.complexities + 2).tolist()
    assert mixed.prompts.shape == (n, mixed.prompt_lengths.max())
    assert mixed.completions.shape == (n, mixed.completion_lengths.max())
    assert (mixed.prompts[:, 0] == V13.boe).all()
    for ids, lengths, width in [
        (mixed.prompts, mixed.prompt_lengths, 14),
        (mixed.completions, mixed.completion_lengths, 43),
    ]:
        real = np.arange(ids.shape[1]) < lengths[:, None]
        assert ((ids == V13.pad) == ~real).all()  # padded exactly after the real tokens
        assert ids.shape[1] <= width
    last = mixed.completions[np.arange(n), mixed.completion_lengths - 1]
    assert (last == V13.eoe).all()
    assert (mixed.completion_lengths <= [rpn.completion_width(int(k)) for k in mixed.complexities]).all()
    assert (mixed.answers == mixed.completions[np.arange(n), mixed.completion_lengths - 2]).all()


def test_full_sequences_and_prompt_batch(mixed: Problems) -> None:
    sequences, lengths = mixed.full_sequences()
    assert sequences.dtype == np.int32 and sequences.shape == (len(mixed), lengths.max())
    for row, n, prompt, completion in zip(
        sequences, lengths, mixed.prompt_lists(), mixed.completion_lists(), strict=True
    ):
        assert row[:n].tolist() == prompt + completion
        assert (row[n:] == V13.pad).all()
    batch = mixed.to_prompt_batch()
    assert isinstance(batch, PromptBatch) and len(batch) == len(mixed)
    assert batch.prompt_ids == mixed.prompt_lists()
    assert batch.answers.tolist() == mixed.answers.tolist()
    assert batch.complexities.tolist() == mixed.complexities.tolist()


def test_to_torch(mixed: Problems) -> None:
    tensors = mixed.to_torch()
    assert set(tensors) == {
        "prompts", "prompt_lengths", "completions", "completion_lengths", "answers", "complexities",
        "sequences", "sequence_lengths",
    }  # fmt: skip
    assert tensors["prompts"].numpy().tolist() == mixed.prompts.tolist()
    assert tensors["sequences"].shape == mixed.full_sequences()[0].shape
    assert np.shares_memory(tensors["answers"].numpy(), mixed.answers)  # zero-copy from numpy


def test_reproducible_seed_sensitive_and_prefix_stable() -> None:
    a = rpn.generate_problems(V13, 300, (1, 4), seed=42)
    b = rpn.generate_problems(V13, 300, (1, 4), seed=42)
    c = rpn.generate_problems(V13, 300, (1, 4), seed=43)
    assert a.prompt_lists() == b.prompt_lists() and a.completion_lists() == b.completion_lists()
    assert a.prompt_lists() != c.prompt_lists()
    # problem i depends on (vocab, range, seed, i) only, not on how many were asked for
    head = rpn.generate_problems(V13, 37, (1, 4), seed=42)
    assert head.prompt_lists() == a.prompt_lists()[:37]
    assert head.completion_lists() == a.completion_lists()[:37]


def test_wide_seeds_do_not_collide() -> None:
    # jax.random.key(2**32 + 5) == key(5) without x64; generate_problems keeps all 64 bits
    prompts = [rpn.generate_problems(V13, 20, (2, 3), seed=s).prompt_lists() for s in (5, 2**32 + 5, -5, 2**63 - 5)]
    assert len({str(p) for p in prompts}) == 4
    with pytest.raises(ValueError, match="64-bit"):
        rpn.generate_problems(V13, 1, (1, 1), seed=2**63)


def test_batch_buckets() -> None:
    assert [rpn._bucket(n) for n in (0, 1, 128, 1024, 1025, 100_000)] == [1024, 1024, 1024, 1024, 2048, 131072]


def test_jit_cache_is_reused_across_calls_and_vocabularies() -> None:
    rpn.generate_problems(V13, 128, (1, 4), seed=0)
    before = dict(rpn.TRACE_COUNTS)
    for seed in range(1, 9):
        rpn.generate_problems(V13, 128, (1, 4), seed=seed)
    rpn.generate_problems(Vocab(31, ("*",)), 100, (1, 4), seed=0)  # p and operators are traced, not static
    assert dict(rpn.TRACE_COUNTS) == before


def test_edge_requests() -> None:
    empty = rpn.generate_problems(V13, 0, (1, 3), seed=0)
    assert len(empty) == 0 and empty.prompts.shape == (0, 0) and empty.prompt_lists() == []
    assert empty.full_sequences()[0].shape == (0, 0)
    one = rpn.generate_problems(V13, 1, (4, 4), seed=0)
    assert one.complexities.tolist() == [4] and one.prompts.shape == (1, 10)
    for n, complexity_range in [(-1, (1, 2)), (3, (0, 2)), (3, (3, 2))]:
        with pytest.raises(ValueError):
            rpn.generate_problems(V13, n, complexity_range, seed=0)
    with pytest.raises(ValueError):
        rpn.sample_expressions(jax.random.key(0), 3, 0, 13, 3)


def test_importing_the_package_does_not_import_jax() -> None:
    code = (
        "import sys, rlvr_ray.task, rlvr_ray.task.reference, rlvr_ray.task.problems, rlvr_ray.task.cli, "
        "rlvr_ray.verify.rewards; assert 'jax' not in sys.modules, 'jax imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
