"""Stage 1, PROMPT: a deterministic stream of RL training prompts (step s always gets the same prompts)."""

from __future__ import annotations

from dataclasses import dataclass

from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import PromptBatch


@dataclass(frozen=True)
class PromptSampler:
    """Draws ``prompts_per_step`` fresh problems per step from the train split of the process (never a held-out
    eval prompt, see :mod:`rlvr_ray.task.split`); resumable by step number.

    >>> sampler = PromptSampler(Vocab(13, ("+",)), (1, 2), prompts_per_step=4, seed=0, max_prompt_length=32)
    >>> len(sampler.sample(step=3))
    4
    """

    vocab: Vocab
    complexity_range: tuple[int, int]
    prompts_per_step: int
    seed: int
    max_prompt_length: int

    def sample(self, step: int) -> PromptBatch:
        from rlvr_ray.task.rpn import generate_problems

        # Training seeds live in their own stream, and the train split never holds an eval prompt.
        problems = generate_problems(
            self.vocab, self.prompts_per_step, self.complexity_range, self.seed * 7_919_123 + step, split="train"
        )
        longest = int(problems.prompt_lengths.max())
        if longest > self.max_prompt_length:
            raise ValueError(
                f"a prompt of {longest} tokens exceeds training.max_prompt_length={self.max_prompt_length}; "
                f"raise it or lower training.complexity_range"
            )
        return problems.to_prompt_batch()
