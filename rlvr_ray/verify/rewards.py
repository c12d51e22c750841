"""Reward functions over token-id sequences: pure, deterministic, never raise on any token sequence.

The verifier actors and the evaluator both call :func:`score_batch`, so training and evaluation agree.
No Ray, vLLM, torch or jax here (numpy only for the result arrays).

Rewards of a completion c (ids generated after the prompt ``<boe> E0``):

- ``boxed``: c's last ``<eoe>`` is at position >= 2, preceded by an operand, preceded by ``=`` (the seed's
  format reward: the completion ends with ``= v <eoe>``).
- ``correct``: boxed, and that operand v is the true answer.
- ``combined``: ``boxed_weight * boxed + correct_weight * correct`` (seed: 0.3 / 0.7).
- ``step``: the fraction of the true chain steps E1..En that c reproduces, in order, before its first error.
  c is read up to its first ``<eoe>`` and split at ``=``: it must start with ``=``, and segment i counts when
  it equals Ei exactly and is complete, i.e. followed by ``=`` or ``<eoe>``; the last step En counts only when
  followed by ``<eoe>``. Hence ``step == 1.0`` exactly when :func:`chain_exact`. A malformed prompt gives 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlvr_ray.task.reference import parse_prompt, reduction_chain
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Scores

REWARD_TYPES = ("boxed", "correct", "combined", "step")
"""The values ``reward_type`` may take."""

Chain = list[list[int]]


def _boxed_value(completion_ids: Sequence[int], vocab: Vocab) -> int | None:
    """The operand v of a completion ending ``= v <eoe>`` (at its last ``<eoe>``), else None."""
    ids = list(completion_ids)
    last = next((i for i in range(len(ids) - 1, -1, -1) if ids[i] == vocab.eoe), -1)
    if last >= 2 and vocab.is_operand(ids[last - 1]) and ids[last - 2] == vocab.eq:
        return int(ids[last - 1])
    return None


def boxed(completion_ids: Sequence[int], vocab: Vocab) -> float:
    """1.0 when the completion's last ``<eoe>`` closes ``= operand <eoe>``, else 0.0."""
    return 0.0 if _boxed_value(completion_ids, vocab) is None else 1.0


def correct(completion_ids: Sequence[int], answer: int, vocab: Vocab) -> float:
    """1.0 when boxed and the boxed operand equals ``answer``, else 0.0."""
    value = _boxed_value(completion_ids, vocab)
    return 1.0 if value is not None and value == answer else 0.0


def true_chain(prompt_ids: Sequence[int], vocab: Vocab) -> Chain | None:
    """The true steps [E1, ..., En] of a prompt ``<boe> E0``; None when the prompt is malformed or has no step."""
    try:
        chain = reduction_chain(parse_prompt(prompt_ids, vocab), vocab)
    except (ValueError, TypeError):
        return None
    return chain or None


def _matched_steps(chain: Chain, completion_ids: Sequence[int], vocab: Vocab) -> int:
    """How many of ``chain``'s steps the completion reproduces in order before its first error (see module doc)."""
    ids = list(completion_ids)
    terminated = vocab.eoe in ids
    body = ids[: ids.index(vocab.eoe)] if terminated else ids
    if not body or body[0] != vocab.eq:
        return 0
    segments: list[list[int]] = [[]]
    for token in body[1:]:
        if token == vocab.eq:
            segments.append([])
        else:
            segments[-1].append(token)
    matched = 0
    for i, (segment, step) in enumerate(zip(segments, chain, strict=False)):
        is_last_segment, is_last_step = i == len(segments) - 1, i == len(chain) - 1
        complete = not is_last_segment or terminated
        ends_right = not is_last_step or is_last_segment  # En must be followed by <eoe>, not by another "="
        if segment != step or not complete or not ends_right:
            break
        matched += 1
    return matched


def step_reward(prompt_ids: Sequence[int], completion_ids: Sequence[int], vocab: Vocab) -> float:
    """Fraction of the true steps E1..En reproduced as ``= Ei`` segments, in order, before the first error."""
    chain = true_chain(prompt_ids, vocab)
    return _step_from_chain(chain, completion_ids, vocab)


def _step_from_chain(chain: Chain | None, completion_ids: Sequence[int], vocab: Vocab) -> float:
    return 0.0 if chain is None else _matched_steps(chain, completion_ids, vocab) / len(chain)


def chain_exact(prompt_ids: Sequence[int], completion_ids: Sequence[int], vocab: Vocab) -> bool:
    """True when the completion up to and including its first ``<eoe>`` is exactly ``= E1 = ... = En <eoe>``."""
    chain = true_chain(prompt_ids, vocab)
    if chain is None:
        return False
    target: list[int] = []
    for step in chain:
        target += [vocab.eq, *step]
    target.append(vocab.eoe)
    ids = list(completion_ids)
    return ids[: len(target)] == target


def score_batch(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    answers: Sequence[int],
    vocab: Vocab,
    reward_type: str,
    boxed_weight: float,
    correct_weight: float,
) -> Scores:
    """Every reward of N (prompt, completion, answer) triples as [N] float32 arrays; ``reward`` is ``reward_type``'s.

    Raises ValueError for an unknown ``reward_type`` or inputs of different lengths (caller bugs), never for
    token contents. True chains are computed once per distinct prompt (a group's samples share their prompt).
    """
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"unknown reward_type {reward_type!r}; allowed: {', '.join(REWARD_TYPES)}")
    if not len(prompt_ids) == len(completion_ids) == len(answers):
        raise ValueError(
            f"need as many prompts as completions and answers, got {len(prompt_ids)}, {len(completion_ids)}, "
            f"{len(answers)}"
        )
    chains: dict[tuple[int, ...], Chain | None] = {}
    boxed_s, correct_s, step_s = (np.zeros(len(completion_ids), dtype=np.float32) for _ in range(3))
    for i, (prompt, completion, answer) in enumerate(zip(prompt_ids, completion_ids, answers, strict=True)):
        key = tuple(prompt)
        if key not in chains:
            chains[key] = true_chain(prompt, vocab)
        boxed_s[i] = boxed(completion, vocab)
        correct_s[i] = correct(completion, answer, vocab)
        step_s[i] = _step_from_chain(chains[key], completion, vocab)
    combined_s = (np.float32(boxed_weight) * boxed_s + np.float32(correct_weight) * correct_s).astype(np.float32)
    by_type = {"boxed": boxed_s, "correct": correct_s, "combined": combined_s, "step": step_s}
    reward = by_type[reward_type].copy()
    return Scores(boxed=boxed_s, correct=correct_s, step=step_s, combined=combined_s, reward=reward)
