"""The train/eval split of the prompt space: a fixed hash of a prompt's token ids puts it in "eval" or "train".

Training (the SFT data stream and the RL :class:`~rlvr_ray.task.prompts.PromptSampler`) never emits an eval
prompt: it draws from the process and rejects them. The held-out evaluation draws only eval prompts, without
replacement. The split depends on nothing but the prompt ids (``<boe> E0`` under the run's vocabulary), so SFT,
RL and eval agree on it with no shared state, in any process.

About ``EVAL_FRACTION`` of every complexity's prompts are eval prompts. Where a complexity has few prompts this
is a small set: k=1 with p=13 and three operators has 13 * 13 * 3 = 507 prompts, about 100 of them held out; the
evaluation then uses all of them and reports how many (see :mod:`rlvr_ray.eval`).

numpy only (no jax): :func:`prompt_hash` is vectorised over rows; :func:`prompt_hash_reference` is the same
function in plain Python, the oracle the tests check the vectorised one against.

>>> prompt_hash_reference([17, 3, 4, 13]) == int(prompt_hash(np.array([[17, 3, 4, 13]]), np.array([4]))[0])
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Split = Literal["all", "train", "eval"]
SPLITS: tuple[Split, ...] = ("all", "train", "eval")

EVAL_FRACTION = 0.2
"""Share of the prompt space held out for evaluation (per complexity, up to the hash's randomness)."""

SPLIT_ID = f"splitmix64-ids/{EVAL_FRACTION}"
"""Names this split (hash and fraction): a warm start or cache trained under another split must not be reused."""

_MASK = (1 << 64) - 1
_START = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
# eval iff the top 53 bits of the hash, as a fraction of 2**53, are below EVAL_FRACTION
_EVAL_BELOW = round(EVAL_FRACTION * 2**53)


def _mix_reference(z: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2**64)."""
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def prompt_hash_reference(ids: Sequence[int], salt: int = 0) -> int:
    """The 64-bit hash of one prompt's ids: h = mix(h ^ (id + 1)) over the ids, from a start that ``salt`` moves."""
    h = _mix_reference(_START ^ (salt & _MASK))
    for token in ids:
        h = _mix_reference(h ^ (int(token) + 1))
    return h


def is_eval_reference(ids: Sequence[int]) -> bool:
    """Plain-Python :func:`in_eval_split` of one prompt."""
    return prompt_hash_reference(ids) >> 11 < _EVAL_BELOW


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)  # uint64 arrays wrap mod 2**64
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def prompt_hash(prompts: np.ndarray, lengths: np.ndarray, salt: int = 0) -> np.ndarray:
    """[N] uint64 hashes of right-padded prompts [N, L] with real lengths [N] (padding does not enter)."""
    prompts = np.asarray(prompts)
    lengths = np.asarray(lengths)
    start = _mix_reference(_START ^ (salt & _MASK))
    h = np.full(prompts.shape[0], start, dtype=np.uint64)
    for j in range(prompts.shape[1] if prompts.ndim == 2 else 0):
        mixed = _mix(h ^ (prompts[:, j].astype(np.uint64) + np.uint64(1)))
        h = np.where(j < lengths, mixed, h)
    return h


def in_eval_split(prompts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[N] bool: which of the right-padded prompts [N, L] (real lengths [N]) belong to the eval split."""
    return (prompt_hash(prompts, lengths) >> np.uint64(11)) < np.uint64(_EVAL_BELOW)


def split_mask(prompts: np.ndarray, lengths: np.ndarray, split: Split) -> np.ndarray:
    """[N] bool: the prompts that belong to ``split`` ("all" keeps every one)."""
    if split == "all":
        return np.ones(np.asarray(prompts).shape[0], dtype=bool)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    held_out = in_eval_split(prompts, lengths)
    return held_out if split == "eval" else ~held_out
