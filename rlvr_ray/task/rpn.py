"""The RPN arithmetic process in JAX: batched (vmap + jit) sampling of expressions and their reduction chains.

An expression of complexity k has 2k+1 tokens: k+1 operands uniform in [0, p), k operators uniform over the
configured ones, and a shape (which positions hold operands) uniform over the Catalan(k) valid RPN shapes.
Token ids follow :class:`~rlvr_ray.task.vocab.Vocab`: operand v is id v, operator j is id p + j.

Compilation is keyed only on shapes and k: p, the operator set and the special ids are *traced* arguments, so
one compilation per (k, batch bucket) serves every vocabulary. Batch sizes are rounded up to a power of two
of at least 1024, so a training loop asking for N=128 mixed-complexity problems each step (about 32 per k,
varying) compiles once per k and then only reuses (a warm N=128 call takes about 8 ms of CPU).

Problem i of ``generate_problems(vocab, n, range, seed)`` depends only on (vocab, range, seed, i), not on n.
With ``split="train"`` (or ``"eval"``) it is the i-th problem of that stream whose prompt lies in the split (see
:mod:`rlvr_ray.task.split`): training never sees an eval prompt.
"""

from __future__ import annotations

import math
import operator
import os

# Problem generation is a few integer ops per token; on a GPU node a jax CUDA backend would also grab most of
# the GPU memory that vLLM and torch need. Set JAX_PLATFORMS yourself before importing this to override.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from collections import Counter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_ray.task.problems import Problems
from rlvr_ray.task.split import EVAL_FRACTION, SPLITS, Split, split_mask
from rlvr_ray.task.vocab import Vocab


def _keep_compiled_on_disk() -> None:
    """Keep XLA's compiled functions in a persistent cache on disk.

    Each process that samples problems (SFT, rollout actors, learner, evaluator) compiles the same functions,
    about 1 s per complexity; with this cache only the first process on a host compiles them. A
    JAX_COMPILATION_CACHE_DIR you set wins (set it empty to turn the cache off). Otherwise the cache lives in
    ``$XDG_CACHE_HOME/rlvr_ray/jax`` (default ``~/.cache/rlvr_ray/jax``), capped at 256 MiB, least recently used
    evicted, and skipped when that directory cannot be created.
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(root, "rlvr_ray", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", 256 * 2**20)  # > 0: entries written under a file lock


_keep_compiled_on_disk()

__all__ = [
    "TRACE_COUNTS",
    "Problems",
    "completion_width",
    "generate_problems",
    "problems_from_expressions",
    "reduce_pass",
    "reduction_chains",
    "sample_expressions",
]

TRACE_COUNTS: Counter[str] = Counter()
"""Times each jitted function was traced (= compiled); tests use it to prove the jit cache is reused."""

_OP_KIND = {"+": 0, "-": 1, "*": 2}
_MIN_BUCKET = 1024
_MAX_P = 2**16
_MAX_DRAWS_PER_KEPT = 16  # a split draw gives up (too few prompts on its side) after this many draws per kept one


class _Ids(NamedTuple):
    """The vocabulary as traced int32 scalars (+ ``kinds`` [3]: the arithmetic of operator j, 0 + 1 - 2 *)."""

    p: jax.Array
    num_ops: jax.Array
    eq: jax.Array
    boe: jax.Array
    eoe: jax.Array
    pad: jax.Array
    kinds: jax.Array


def _ids(vocab: Vocab) -> _Ids:
    if vocab.p >= _MAX_P:
        raise ValueError(f"p must be < {_MAX_P} for the JAX process (32-bit arithmetic), got {vocab.p}")
    kinds = [_OP_KIND[op] for op in vocab.operators]
    kinds += [0] * (3 - len(kinds))  # fixed length 3 so the operator count is not part of the compiled shape
    return _Ids(
        p=jnp.int32(vocab.p),
        num_ops=jnp.int32(len(vocab.operators)),
        eq=jnp.int32(vocab.eq),
        boe=jnp.int32(vocab.boe),
        eoe=jnp.int32(vocab.eoe),
        pad=jnp.int32(vocab.pad),
        kinds=jnp.asarray(kinds, dtype=jnp.int32),
    )


def completion_width(k: int) -> int:
    """Longest possible completion of complexity k: k passes removing one triple each, plus ``<eoe>``.

    Pass i leaves at most 2(k-i)+1 tokens, so the "= Ei" segments total sum(2(k-i)+2) = k(k+1).
    """
    return k * (k + 1) + 1


def _bucket(n: int) -> int:
    """Batch size actually computed for n items: the next power of two >= max(n, 1024), to bound recompilation."""
    return max(_MIN_BUCKET, 1 << max(0, n - 1).bit_length())


def _seed_key(seed: int) -> jax.Array:
    """A PRNG key from any signed 64-bit seed. ``jax.random.key`` truncates to 32 bits without x64 (2**32 + 5
    would collide with 5), so the two 32-bit halves of the seed's 64-bit two's complement form the key data."""
    seed = operator.index(seed)  # numpy ints welcome; floats are a mistake
    if not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be a signed 64-bit integer, got {seed}")
    word = seed % 2**64
    return jax.random.wrap_key_data(jnp.asarray([word >> 32, word & 0xFFFFFFFF], dtype=jnp.uint32))


# ---------------------------------------------------------------------------------------------------------------
# Per-expression functions (vmapped below)


def _shape_from_bits(sort_bits: jax.Array) -> jax.Array:
    """[2k+1] uint32 random words -> [2k+1] bool, True where an operand goes; uniform over the Catalan(k) shapes.

    Sorting by random words gives a uniform permutation of k+1 (+1)s and k (-1)s (as jax.random.permutation
    does; ties, below 1e-8, aside). Cycle lemma: exactly one rotation of such a sequence has all prefix sums
    >= 1 (= a valid RPN shape: operand +1, operator -1), the one starting right after the last minimum of the
    prefix sums S_0..S_2k. The 2k+1 rotations of a sequence are distinct (a sequence equal to a non-trivial
    rotation of itself is periodic, and its sum would be a multiple > 1 of the period's sum, but it is 1), so
    every shape is hit by exactly 2k+1 of the C(2k+1, k) equally likely sequences.
    """
    k = (sort_bits.shape[0] - 1) // 2
    steps = jnp.where(jnp.argsort(sort_bits) <= k, 1, -1)
    before = jnp.cumsum(steps) - steps  # S_0 .. S_2k: the sum before each position
    last_min = 2 * k - jnp.argmin(before[::-1])  # argmin returns the first hit, so reverse for the last
    return jnp.roll(steps, -last_min) == 1


def _uniform_below(high: jax.Array, low: jax.Array, m: jax.Array) -> jax.Array:
    """(high * 2**32 + low) mod m for uint32 words and 1 <= m < 2**16, without 64-bit ints.

    A 64-bit random number reduced mod m: off from uniform by less than m / 2**64 (jax.random.randint is built
    the same way). The products stay below m**2 + m < 2**32.
    """
    m = m.astype(jnp.uint32)
    two_32 = (jnp.uint32(0xFFFFFFFF) % m + 1) % m
    return ((high % m) * two_32 + low % m) % m


def _sample_one(key: jax.Array, k: int, p: jax.Array, num_ops: jax.Array) -> jax.Array:
    """[2k+1] int32 token ids of one expression of complexity k.

    One draw of 5 x (2k+1) random words (a single threefry call keeps compilation short): a shape, then an
    operand and an operator for every position, of which the shape keeps one.
    """
    bits = jax.random.bits(key, (5, 2 * k + 1), dtype=jnp.uint32)
    is_operand = _shape_from_bits(bits[0])
    operands = _uniform_below(bits[1], bits[2], p).astype(jnp.int32)
    operators = _uniform_below(bits[3], bits[4], num_ops).astype(jnp.int32)
    return jnp.where(is_operand, operands, p + operators).astype(jnp.int32)


def _shift_left(x: jax.Array, by: int, fill: jax.Array | bool) -> jax.Array:
    return jnp.concatenate([x[by:], jnp.full((by,), fill, dtype=x.dtype)])


def _shift_right(x: jax.Array, by: int) -> jax.Array:
    return jnp.concatenate([jnp.zeros((by,), dtype=x.dtype), x[:-by]])


def _reduce_row(tokens: jax.Array, ids: _Ids) -> tuple[jax.Array, jax.Array]:
    """One reduction pass over [L] ids right-padded with pad -> (new [L] padded, new length).

    Triples (operand, operand, operator) can never overlap (an overlap would need an operator to be an
    operand), so the left-to-right scan of the reference finds exactly the positions where such a triple
    starts; detecting them all at once and compacting with a cumulative sum is the same pass, in parallel.
    """
    length = tokens.shape[0]
    is_num = (tokens >= 0) & (tokens < ids.p)
    is_op = (tokens >= ids.p) & (tokens < ids.p + ids.num_ops)
    b, op = _shift_left(tokens, 1, ids.pad), _shift_left(tokens, 2, ids.pad)
    start = is_num & _shift_left(is_num, 1, False) & _shift_left(is_op, 2, False)
    covered = _shift_right(start, 1) | _shift_right(start, 2)
    kind = ids.kinds[jnp.clip(op - ids.p, 0, 2)]
    value = jnp.select([kind == 0, kind == 1], [tokens + b, tokens - b], tokens * b) % ids.p
    new = jnp.where(start, value, tokens)
    keep = ~covered & (tokens != ids.pad)
    position = jnp.where(keep, jnp.cumsum(keep) - 1, length)  # dropped tokens go out of bounds
    out = jnp.full((length,), ids.pad, dtype=jnp.int32).at[position].set(new, mode="drop")
    return out, keep.sum(dtype=jnp.int32)


def _chain_row(expr: jax.Array, passes: int, ids: _Ids) -> tuple[jax.Array, jax.Array]:
    """E0 [L] -> (E0..E_passes [passes+1, L] padded, lengths [passes+1]); passes past a single operand are no-ops."""

    def one_pass(tokens: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        out, n = _reduce_row(tokens, ids)
        return out, (out, n)

    first_len = (expr != ids.pad).sum(dtype=jnp.int32)
    _, (rows, lens) = jax.lax.scan(one_pass, expr, None, length=passes)
    return jnp.concatenate([expr[None], rows]), jnp.concatenate([first_len[None], lens])


def _completion_row(chain: jax.Array, lens: jax.Array, k: int, ids: _Ids) -> tuple[jax.Array, jax.Array]:
    """Chain [k+1, 2k+1] -> (``= E1 = ... = En <eoe>`` [k(k+1)+1] padded, its length)."""
    width = completion_width(k)
    n_steps = (lens[:-1] > 1).sum()  # lengths strictly shrink to 1, then stay 1
    segments = jnp.concatenate([jnp.full((k, 1), ids.eq, dtype=jnp.int32), chain[1:]], axis=1)  # [k, 2k+2]
    column = jnp.arange(segments.shape[1])
    mask = (jnp.arange(1, k + 1)[:, None] <= n_steps) & (column[None, :] <= lens[1:, None])
    flat, flat_mask = segments.reshape(-1), mask.reshape(-1)
    position = jnp.where(flat_mask, jnp.cumsum(flat_mask) - 1, width)
    out = jnp.full((width,), ids.pad, dtype=jnp.int32).at[position].set(flat, mode="drop")
    total = flat_mask.sum(dtype=jnp.int32)
    return out.at[total].set(ids.eoe), total + 1


# ---------------------------------------------------------------------------------------------------------------
# Batched, jitted functions (k static; p and the operator set traced)


def _sample_batch(keys: jax.Array, k: int, p: jax.Array, num_ops: jax.Array) -> jax.Array:
    TRACE_COUNTS["sample"] += 1
    return jax.vmap(lambda key: _sample_one(key, k, p, num_ops))(keys)


def _reduce_batch(tokens: jax.Array, ids: _Ids) -> tuple[jax.Array, jax.Array]:
    TRACE_COUNTS["reduce"] += 1
    return jax.vmap(lambda row: _reduce_row(row, ids))(tokens)


def _chains_batch(exprs: jax.Array, ids: _Ids) -> tuple[jax.Array, jax.Array]:
    TRACE_COUNTS["chains"] += 1
    passes = (exprs.shape[1] - 1) // 2
    return jax.vmap(lambda row: _chain_row(row, passes, ids))(exprs)


def _complexities_batch(key: jax.Array, indices: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    TRACE_COUNTS["complexities"] += 1
    return jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), low, high + 1))(indices)


def _problems_batch(key: jax.Array, indices: jax.Array, k: int, ids: _Ids) -> tuple[jax.Array, ...]:
    """Problems ``indices`` [B] of complexity k.

    Returns E0 [B, 2k+1], completions [B, k(k+1)+1] padded, completion lengths [B], answers [B].
    """
    TRACE_COUNTS["problems"] += 1
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    exprs = jax.vmap(lambda key_i: _sample_one(key_i, k, ids.p, ids.num_ops))(keys)
    return _solve(exprs, k, ids)


def _solve(exprs: jax.Array, k: int, ids: _Ids) -> tuple[jax.Array, ...]:
    """E0 [B, 2k+1] -> (E0, completions [B, k(k+1)+1] padded, completion lengths [B], answers [B])."""
    chains, lens = jax.vmap(lambda row: _chain_row(row, k, ids))(exprs)
    completions, completion_lens = jax.vmap(lambda c, n: _completion_row(c, n, k, ids))(chains, lens)
    return exprs, completions, completion_lens, chains[:, -1, 0]


def _solve_batch(exprs: jax.Array, ids: _Ids) -> tuple[jax.Array, ...]:
    TRACE_COUNTS["solve"] += 1
    return _solve(exprs, (exprs.shape[1] - 1) // 2, ids)


_sample_jit = jax.jit(_sample_batch, static_argnames="k")
_reduce_jit = jax.jit(_reduce_batch)
_chains_jit = jax.jit(_chains_batch)
_complexities_jit = jax.jit(_complexities_batch)
_problems_jit = jax.jit(_problems_batch, static_argnames="k")
_solve_jit = jax.jit(_solve_batch)


def sample_expressions(key: jax.Array, n: int, k: int, p: int, num_ops: int) -> jax.Array:
    """[n, 2k+1] int32 ids of n expressions of complexity k (operator j is id p + j), from a PRNG key."""
    if k < 1 or n < 0 or not 2 <= p < _MAX_P or num_ops < 1:
        raise ValueError(
            f"need k >= 1, n >= 0, 2 <= p < {_MAX_P}, num_ops >= 1; got k={k}, n={n}, p={p}, num_ops={num_ops}"
        )
    keys = jax.random.split(key, _bucket(n))
    return _sample_jit(keys, k=k, p=jnp.int32(p), num_ops=jnp.int32(num_ops))[:n]


def reduce_pass(tokens: np.ndarray | jax.Array, vocab: Vocab) -> tuple[jax.Array, jax.Array]:
    """One reduction pass on each row of [B, L] ids right-padded with ``vocab.pad`` -> (ids [B, L], lengths [B])."""
    return _reduce_jit(jnp.asarray(tokens, dtype=jnp.int32), _ids(vocab))


def reduction_chains(exprs: np.ndarray | jax.Array, vocab: Vocab) -> tuple[jax.Array, jax.Array]:
    """Expressions [B, 2k+1] -> (E0..Ek [B, k+1, 2k+1] padded with ``vocab.pad``, lengths [B, k+1]).

    Rows past the last step En repeat En (a pass on a single operand changes nothing).
    """
    return _chains_jit(jnp.asarray(exprs, dtype=jnp.int32), _ids(vocab))


# ---------------------------------------------------------------------------------------------------------------
# Public entry


def _check_request(n: int, complexity_range: tuple[int, int]) -> tuple[int, int]:
    low, high = (operator.index(c) for c in complexity_range)
    if operator.index(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if low < 1 or high < low:
        raise ValueError(f"complexity_range must be (min, max) with 1 <= min <= max, got {complexity_range}")
    return low, high


def _padded_indices(indices: np.ndarray) -> np.ndarray:
    out = np.zeros(_bucket(len(indices)), dtype=np.int32)
    out[: len(indices)] = indices
    return out


def generate_problems(
    vocab: Vocab, n: int, complexity_range: tuple[int, int], seed: int, split: Split = "all"
) -> Problems:
    """n problems, complexity k uniform over ``complexity_range`` (inclusive) per problem, reproducible from seed.

    ``split`` "train" or "eval" keeps only prompts of that side of the train/eval split: problem i is then the
    i-th problem of the unsplit stream that lies in the split (more are drawn and the others rejected), so it
    still depends only on (vocab, range, seed, split, i). ValueError when the split holds (almost) no prompt of
    the range (a tiny prompt space).
    """
    low, high = _check_request(n, complexity_range)
    n = operator.index(n)
    if split == "all":
        return _generate(vocab, n, low, high, seed)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    share = EVAL_FRACTION if split == "eval" else 1.0 - EVAL_FRACTION
    # kept ~ Binomial(count, share): n / share draws plus 5 standard deviations are enough at the first try,
    # except with odds below one in a million; then twice as many are drawn
    count = int((n + 5 * math.sqrt(n * (1 - share))) / share) + 16
    while count <= _MAX_DRAWS_PER_KEPT * (n + 16) / share:
        problems = _generate(vocab, count, low, high, seed)
        kept = np.flatnonzero(split_mask(problems.prompts, problems.prompt_lengths, split))
        if len(kept) >= n:
            return problems.take(kept[:n])
        count *= 2
    raise ValueError(
        f"the {split} split of complexities {low}-{high} (p={vocab.p}, operators {''.join(vocab.operators)}) holds "
        f"too few prompts to draw {n} problems from; raise the complexity or p"
    )


def _generate(vocab: Vocab, n: int, low: int, high: int, seed: int) -> Problems:
    """Problems 0..n-1 of the unsplit stream.

    Complexities and expressions are drawn per problem index from keys folded out of the seed, then generated
    one complexity at a time (k fixes the array shapes) and scattered back in index order with numpy.
    """
    root = _seed_key(seed)
    k_key, e_key = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    all_indices = np.arange(_bucket(n), dtype=np.int32)
    ks = np.asarray(_complexities_jit(k_key, all_indices, jnp.int32(low), jnp.int32(high)))[:n]
    ids = _ids(vocab)
    members = {k: np.flatnonzero(ks == k) for k in np.unique(ks).tolist()}
    # dispatch every complexity before fetching any: XLA runs them while Python moves on
    outputs = {k: _problems_jit(e_key, _padded_indices(idx), k=k, ids=ids) for k, idx in members.items()}
    groups = {k: (idx, [np.asarray(a)[: len(idx)] for a in jax.device_get(outputs[k])]) for k, idx in members.items()}
    return _assemble(vocab, ks, groups)


def problems_from_expressions(vocab: Vocab, exprs: np.ndarray) -> Problems:
    """Problems of given expressions E0 [N, 2k+1] (ids, all of complexity k): their chains, completions, answers.

    Rows are padded to a power-of-two bucket (as in :func:`generate_problems`) to bound recompilation.
    """
    exprs = np.asarray(exprs, dtype=np.int32)
    if exprs.ndim != 2 or exprs.shape[1] < 3 or exprs.shape[1] % 2 == 0:
        raise ValueError(f"expressions must be [N, 2k+1] with k >= 1, got shape {exprs.shape}")
    n, k = exprs.shape[0], (exprs.shape[1] - 1) // 2
    if n == 0:
        return _assemble(vocab, np.zeros(0, dtype=np.int32), {})
    padded = np.zeros((_bucket(n), exprs.shape[1]), dtype=np.int32)
    padded[:n] = exprs
    padded[n:] = np.where(np.arange(exprs.shape[1]) < k + 1, 0, vocab.p)  # "0 0 .. 0 op .. op": a valid filler
    out = [np.asarray(a)[:n] for a in jax.device_get(_solve_jit(jnp.asarray(padded), _ids(vocab)))]
    return _assemble(vocab, np.full(n, k, dtype=np.int32), {k: (np.arange(n), out)})


def _assemble(vocab: Vocab, ks: np.ndarray, groups: dict[int, tuple[np.ndarray, list[np.ndarray]]]) -> Problems:
    """Scatter per-complexity results into right-padded [N, ...] arrays (one numpy assignment per k)."""
    n = len(ks)
    prompt_lengths = (2 * ks + 2).astype(np.int32)
    completion_lengths = np.zeros(n, dtype=np.int32)
    answers = np.zeros(n, dtype=np.int32)
    for members, (_, _, lens, answer) in groups.values():
        completion_lengths[members], answers[members] = lens, answer
    prompts = np.full((n, int(prompt_lengths.max(initial=0))), vocab.pad, dtype=np.int32)
    completions = np.full((n, int(completion_lengths.max(initial=0))), vocab.pad, dtype=np.int32)
    prompts[:, :1] = vocab.boe
    for members, (exprs, comps, _, _) in groups.values():
        prompts[members, 1 : exprs.shape[1] + 1] = exprs
        width = min(comps.shape[1], completions.shape[1])  # the group's padding beyond the batch's longest
        completions[members, :width] = comps[:, :width]
    return Problems(
        prompts=prompts,
        prompt_lengths=prompt_lengths,
        completions=completions,
        completion_lengths=completion_lengths,
        answers=answers,
        complexities=ks.astype(np.int32),
        pad_id=vocab.pad,
    )
