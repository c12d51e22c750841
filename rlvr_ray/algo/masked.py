"""Masked reductions shared by the advantage, loss and KL functions.

``mask`` is a float tensor of the same shape as ``x`` with 1 on the entries that count (completion tokens) and 0
on padding. Empty masks never divide by zero: the denominators are clamped to at least 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

WHITEN_EPS = 1e-8
"""Added to the variance before the square root when whitening (verl/OpenRLHF use the same)."""


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x * mask`` over ``dim`` (all dims when None). x, mask: same shape."""
    if dim is None:
        return (x * mask).sum()
    return (x * mask).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1; 0 where the mask is empty. x, mask: same shape.

    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor(1.5000)
    """
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


SumFn = Callable[[Tensor], Tensor]
"""Sums a tensor over every learner rank (an all-reduce); the identity on a single process."""


def masked_whiten(x: Tensor, mask: Tensor, global_sum: SumFn | None = None) -> Tensor:
    """(x - mean) / sqrt(var + 1e-8) with mean and unbiased variance over the masked entries; 0 off the mask.

    x, mask: same shape (typically [B, T]). With fewer than two masked entries the variance is taken as 0.
    ``global_sum``: when the batch is sharded over ranks, the all-reduce that makes mean and variance those of
    the whole batch (two small collectives; every rank must call it).
    """
    count, total = mask.sum(), masked_sum(x, mask)
    if global_sum is not None:
        count, total = global_sum(torch.stack([count, total]))
    mean = total / count.clamp(min=1)
    # Bessel's correction as in verl's masked_whiten; clamp so a single token does not divide by zero.
    squared = masked_sum((x - mean) ** 2, mask)
    if global_sum is not None:
        squared = global_sum(squared)
    var = squared / (count - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + WHITEN_EPS) * mask
