"""Learning-rate controllers (rlvr_ray.algo.lr_control): the band rule, the bounds, the registry."""

from __future__ import annotations

import itertools

import pytest

from rlvr_ray.algo.lr_control import LR_CONTROLLERS, LRBounds, get_lr_controller, kl_adaptive_lr

BOUNDS = LRBounds(target_kl=0.01, factor=1.5, min_lr=1e-5, max_lr=1e-3)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [(0.0201, 1e-4 / 1.5), (0.02, 1e-4), (0.01, 1e-4), (0.005, 1e-4), (0.0049, 1e-4 * 1.5), (0.0, 1e-4 * 1.5)],
)
def test_kl_adaptive_divides_above_twice_the_target_and_multiplies_below_half(kl: float, expected: float) -> None:
    assert kl_adaptive_lr(1e-4, kl, BOUNDS) == pytest.approx(expected, rel=1e-12)


def test_kl_adaptive_stays_within_its_bounds_and_comes_back() -> None:
    lr, seen = 1e-3, []
    for _ in range(20):  # too far every step: down to the floor, never below
        lr = kl_adaptive_lr(lr, 1.0, BOUNDS)
        seen.append(lr)
    assert min(seen) == BOUNDS.min_lr and lr == BOUNDS.min_lr
    assert seen[0] == pytest.approx(1e-3 / 1.5) and all(a >= b for a, b in itertools.pairwise(seen))
    for _ in range(20):  # then quiet steps: back up to the ceiling, never above
        lr = kl_adaptive_lr(lr, 0.0, BOUNDS)
    assert lr == BOUNDS.max_lr


def test_constant_never_moves_and_unknown_names_list_the_valid_ones() -> None:
    assert get_lr_controller("constant")(3e-4, 99.0, BOUNDS) == 3e-4
    assert set(LR_CONTROLLERS) == {"constant", "kl_adaptive"}
    with pytest.raises(ValueError, match="unknown lr controller 'cosine'; valid: constant, kl_adaptive"):
        get_lr_controller("cosine")
