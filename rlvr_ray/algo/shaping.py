"""DAPO's reward and batch shaping (arXiv 2503.14476): soft overlong punishment and dynamic sampling.

Both act on sequence-level scores [B] before the group advantages are computed; pure torch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, max_length: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """Soft overlong punishment [B] (DAPO eq. 13), added to the reward of each completion.

    lengths [B] (completion tokens) -> 0 up to ``max_length - buffer`` tokens, then falling linearly to
    ``-penalty`` at ``max_length``, and ``-penalty`` beyond it.

    >>> overlong_penalty(torch.tensor([30, 32, 36, 40]), max_length=40, buffer=8)
    tensor([-0.0000, -0.0000, -0.5000, -1.0000])
    """
    expected = max_length - buffer
    excess = (lengths.to(torch.float32) - expected).clamp(min=0) / buffer
    return -penalty * excess.clamp(max=1.0)


def varied_groups(scores: Tensor, group_ids: Tensor) -> Tensor:
    """[B] bool: True where the sample's group has scores that are not all equal.

    DAPO's dynamic sampling drops the other groups (all right or all wrong): their group-normalised advantages
    are 0, so they add nothing to the gradient and would only dilute a token-mean loss.

    >>> varied_groups(torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5]), torch.tensor([0, 0, 1, 1, 2]))
    tensor([ True,  True, False, False, False])
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = int(inverse.max()) + 1 if inverse.numel() else 0
    lowest = torch.full((n,), float("inf"), dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, inverse, scores, "amin"
    )
    highest = torch.full((n,), float("-inf"), dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, inverse, scores, "amax"
    )
    return (highest > lowest)[inverse]
