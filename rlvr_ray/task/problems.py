"""The :class:`Problems` record: a batch of RPN problems as right-padded numpy arrays (no jax, torch lazily)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlvr_ray.types import PromptBatch

if TYPE_CHECKING:
    import torch


def _rows_to_lists(ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    return [row[:length].tolist() for row, length in zip(ids, lengths, strict=True)]


@dataclass
class Problems:
    """N problems; every id array is int32 and right-padded with ``pad_id``.

    prompts:            [N, Lp] ``<boe> E0``.
    prompt_lengths:     [N] real tokens of each prompt (2k + 2 for complexity k).
    completions:        [N, Lc] ``= E1 = ... = En <eoe>``.
    completion_lengths: [N] real tokens of each completion (ends with ``<eoe>``).
    answers:            [N] the value of E0 mod p (the single operand of En).
    complexities:       [N] number of operators k of E0.
    pad_id:             the ``<pad>`` id used for padding.
    """

    prompts: np.ndarray
    prompt_lengths: np.ndarray
    completions: np.ndarray
    completion_lengths: np.ndarray
    answers: np.ndarray
    complexities: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def take(self, indices: np.ndarray | list[int]) -> Problems:
        """The problems at ``indices`` (in that order), padded to their own longest prompt and completion."""
        idx = np.asarray(indices, dtype=np.int64)
        prompt_lengths, completion_lengths = self.prompt_lengths[idx], self.completion_lengths[idx]
        return Problems(
            prompts=self.prompts[idx, : int(prompt_lengths.max(initial=0))],
            prompt_lengths=prompt_lengths,
            completions=self.completions[idx, : int(completion_lengths.max(initial=0))],
            completion_lengths=completion_lengths,
            answers=self.answers[idx],
            complexities=self.complexities[idx],
            pad_id=self.pad_id,
        )

    def prompt_lists(self) -> list[list[int]]:
        """N unpadded prompts ``<boe> E0`` as id lists."""
        return _rows_to_lists(self.prompts, self.prompt_lengths)

    def completion_lists(self) -> list[list[int]]:
        """N unpadded target completions ``= E1 = ... = En <eoe>`` as id lists."""
        return _rows_to_lists(self.completions, self.completion_lengths)

    def full_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Prompt followed by completion: ids [N, L] int32 right-padded with ``pad_id``, lengths [N] int32.

        L is the longest prompt + completion in the batch. Built with index arithmetic, no per-row loop.
        """
        lengths = (self.prompt_lengths + self.completion_lengths).astype(np.int32)
        width = int(lengths.max()) if len(self) else 0
        out = np.full((len(self), width), self.pad_id, dtype=np.int32)
        rows, cols = np.nonzero(np.arange(self.prompts.shape[1]) < self.prompt_lengths[:, None])
        out[rows, cols] = self.prompts[rows, cols]
        rows, cols = np.nonzero(np.arange(self.completions.shape[1]) < self.completion_lengths[:, None])
        out[rows, self.prompt_lengths[rows] + cols] = self.completions[rows, cols]
        return out, lengths

    def to_prompt_batch(self) -> PromptBatch:
        """The prompts (unpadded), answers and complexities as the rollout stage's input record."""
        return PromptBatch(
            prompt_ids=self.prompt_lists(),
            answers=self.answers.astype(np.int64),
            complexities=self.complexities.astype(np.int64),
        )

    def to_torch(self) -> dict[str, torch.Tensor]:
        """Every array as a CPU tensor (zero-copy ``torch.from_numpy``), plus ``sequences``/``sequence_lengths``.

        Ids stay int32 (``nn.Embedding`` accepts int32 indices); call ``.long()`` where int64 is needed.
        """
        import torch

        sequences, sequence_lengths = self.full_sequences()
        arrays = {
            "prompts": self.prompts,
            "prompt_lengths": self.prompt_lengths,
            "completions": self.completions,
            "completion_lengths": self.completion_lengths,
            "answers": self.answers,
            "complexities": self.complexities,
            "sequences": sequences,
            "sequence_lengths": sequence_lengths,
        }
        return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
