"""DAPO shaping: soft overlong punishment and the dynamic-sampling group filter, by hand."""

from __future__ import annotations

import torch

from rlvr_ray.algo.shaping import overlong_penalty, varied_groups


def test_overlong_penalty_by_hand() -> None:
    # max 20 tokens, buffer 4: free up to 16, then -0.25 per token, -1 from 20 on; scaled by the penalty factor.
    lengths = torch.tensor([3, 16, 17, 18, 19, 20, 25])
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0])
    torch.testing.assert_close(overlong_penalty(lengths, 20, 4), expected)
    torch.testing.assert_close(overlong_penalty(lengths, 20, 4, penalty=0.5), expected / 2)


def test_varied_groups_by_hand() -> None:
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.2, 0.2, 7.0])
    groups = torch.tensor([4, 4, 9, 9, 2, 2, 5, 5, 8])  # any ids; group 8 has one sample
    assert varied_groups(scores, groups).tolist() == [False, False, True, True, True, True, False, False, False]
