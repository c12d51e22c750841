"""Rows that share a prompt, packed: the prompt once, then each row's completion, under a block attention mask.

The samples of a group share its prompt, so a padded ``[N, L]`` batch runs the same prompt through the forward and
backward passes once per sample. On the RPN task prompts are most of each sequence (~15 prompt tokens against ~9
completion tokens from a partly trained policy), and the learner's cost is its token count. Packed, each pack row
holds whole segments (one prompt, then the completions of the rows that share it, back to back), first-fit by
decreasing size, so there is little padding as well. The attention mask lets a prompt token see the prompt before
it, and a completion token the prompt and its own completion before it; positions restart at the prompt's end for
each completion. Every row then sees exactly what it sees unpacked, and :func:`unpack` gathers the outputs back
into the ``[N, L, ...]`` layout (the shared prompt positions feed every row of their segment, so the backward pass
sums their gradients over the rows, as the unpacked passes did).

>>> import torch
>>> ids = torch.tensor([[5, 6, 1, 2], [5, 6, 3, 0], [7, 1, 0, 0]])
>>> pack = pack_rows(ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]), torch.tensor([2, 2, 1]))
>>> pack.input_ids.tolist(), pack.position_ids.tolist()
([[5, 6, 1, 2, 3, 7, 1]], [[0, 1, 2, 3, 2, 0, 1]])
>>> pack.source.tolist()
[[0, 1, 2, 3], [0, 1, 4, 0], [5, 6, 0, 0]]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

PACK_WIDTH = 128
"""Pack rows are this many tokens wide, or as wide as the largest segment (one prompt and its rows' completions)."""


class PackedRows(NamedTuple):
    """R pack rows of width W for N original rows of length L."""

    input_ids: torch.Tensor  # [R, W] long (0 on padding)
    position_ids: torch.Tensor  # [R, W] long
    attention_mask: torch.Tensor  # [R, 1, W, W] bool
    source: torch.Tensor  # [N, L] long: index into the flattened [R * W] of each original token (0 past its end)


def prompt_lengths(attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[N] prompt length of each right-padded row, from the shifted completion mask (``mask[j] = 1`` where token
    j+1 is generated); a row with no completion token is all prompt."""
    has_completion = completion_mask.bool().any(dim=-1)
    first = completion_mask.float().argmax(dim=-1) + 1
    return torch.where(has_completion, first, attention_mask.sum(dim=-1))


def pack_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lens: torch.Tensor, width: int = PACK_WIDTH
) -> PackedRows:
    """Pack right-padded rows ``[N, L]`` whose first ``prompt_lens`` tokens are their prompt (see module doc)."""
    ids, lengths, prompts = input_ids.tolist(), attention_mask.sum(dim=-1).tolist(), prompt_lens.tolist()
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for row in range(len(ids)):
        by_prompt.setdefault(tuple(ids[row][: prompts[row]]), []).append(row)
    segments = list(by_prompt.values())
    sizes = [prompts[rows[0]] + sum(lengths[r] - prompts[r] for r in rows) for rows in segments]
    bins = _first_fit_decreasing(sizes, max(width, *sizes))
    wide = max(sum(sizes[s] for s in members) for members in bins)
    tokens = np.zeros((len(bins), wide), dtype=np.int64)
    positions = np.zeros((len(bins), wide), dtype=np.int64)
    segment = np.full((len(bins), wide), -1, dtype=np.int64)  # -1: padding
    sample = np.zeros((len(bins), wide), dtype=np.int64)  # 0: prompt, k: the k-th completion of the segment
    source = np.zeros(tuple(input_ids.shape), dtype=np.int64)
    for b, members in enumerate(bins):
        at = 0
        for s in members:
            rows, p = segments[s], prompts[segments[s][0]]
            tokens[b, at : at + p], positions[b, at : at + p] = ids[rows[0]][:p], np.arange(p)
            segment[b, at : at + p] = s
            source[rows, :p] = b * wide + at + np.arange(p)
            at += p
            for k, row in enumerate(rows, start=1):
                c = lengths[row] - p
                tokens[b, at : at + c], positions[b, at : at + c] = ids[row][p : p + c], np.arange(p, p + c)
                segment[b, at : at + c], sample[b, at : at + c] = s, k
                source[row, p : p + c] = b * wide + at + np.arange(c)
                at += c
    device = input_ids.device
    return PackedRows(
        torch.from_numpy(tokens).to(device),
        torch.from_numpy(positions).to(device),
        _block_mask(torch.from_numpy(segment), torch.from_numpy(sample)).to(device),
        torch.from_numpy(source).to(device),
    )


def unpack(packed: torch.Tensor, pack: PackedRows) -> torch.Tensor:
    """Per-token outputs ``[R, W, ...]`` of the packed rows back to the original layout ``[N, L, ...]``."""
    flat = packed.reshape(-1, *packed.shape[2:])
    return flat[pack.source]


def _first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Segment indices grouped into bins of at most ``capacity`` tokens, largest segments placed first."""
    bins: list[list[int]] = []
    free: list[int] = []
    for s in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        fits = next((b for b in range(len(bins)) if free[b] >= sizes[s]), None)
        if fits is None:
            bins.append([s])
            free.append(capacity - sizes[s])
        else:
            bins[fits].append(s)
            free[fits] -= sizes[s]
    return bins


def _block_mask(segment: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """[R, 1, W, W]: query q sees key k <= q of its own segment that is prompt or of q's own sample. A padding
    slot sees the padding before it and itself (never an empty softmax row)."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_segment = segment[:, :, None] == segment[:, None, :]
    visible = (sample[:, None, :] == 0) | (sample[:, None, :] == sample[:, :, None])
    return (causal & same_segment & visible)[:, None]
