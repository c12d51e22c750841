"""Records that travel between the stages: prompts -> rollouts -> scored rollouts -> train batch.

Plain dataclasses of numpy arrays and int lists, so they pickle cheaply through the Ray object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PromptBatch:
    """B prompts drawn from the task.

    prompt_ids:  B lists of token ids (``<boe> E0``), no padding.
    answers:     [B] int, the true final value mod p.
    complexities:[B] int, number of operators k.
    """

    prompt_ids: list[list[int]]
    answers: np.ndarray
    complexities: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass
class SamplingSpec:
    """How to sample: n completions per prompt, temperature, top_p, token budget, stop token."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 40
    stop_token_id: int = -1
    seed: int = 0
    greedy: bool = False


@dataclass
class Completion:
    """One sampled completion of prompt ``prompt_index``.

    token_ids: generated ids, ending with the stop token when it was produced.
    logprobs:  logprob of each generated token under the temperature-scaled engine policy (same length).
    """

    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]


@dataclass
class RolloutBatch:
    """N = B * n completions in prompt-major order: completions g*n .. g*n+n-1 answer prompt g (group_ids == g).

    prompt_ids, completion_ids, logprobs: one entry per completion (the prompt repeated for each of its n samples).
    policy_version: [N] the weight version that generated each completion.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[list[float]]
    group_ids: np.ndarray
    answers: np.ndarray
    complexities: np.ndarray
    policy_version: np.ndarray
    generate_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_generated_tokens(self) -> int:
        return int(sum(len(c) for c in self.completion_ids))


@dataclass
class Scores:
    """Per-completion rewards, all [N] float32. ``reward`` is the one selected by ``reward_type``."""

    boxed: np.ndarray
    correct: np.ndarray
    step: np.ndarray
    combined: np.ndarray
    reward: np.ndarray


@dataclass
class ScoredBatch:
    """Rollouts with their scores and verifier bookkeeping."""

    rollouts: RolloutBatch
    scores: Scores
    verifier_stats: dict[str, float] = field(default_factory=dict)
