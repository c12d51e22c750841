"""StoredWeights: the form the object-store sync puts weights in (numpy bytes, so Ray keeps them out of band)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr_ray.sync.object_store import StoredWeights, as_tensors


def test_every_dtype_and_shape_round_trips_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(0)
    square = torch.randn(4, 4, generator=generator)
    state = {
        "fp32": torch.randn(3, 5, generator=generator),
        "bf16": torch.randn(7, generator=generator).to(torch.bfloat16),
        "fp16": torch.randn(2, 3, generator=generator).to(torch.float16),
        "scalar": torch.tensor(-1.5),
        "transposed": square.t(),  # not contiguous
        "nan_inf": torch.tensor([float("nan"), float("inf"), -0.0]),
    }
    back = StoredWeights.from_tensors(state).tensors()
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert back[name].is_contiguous(), name
        bits = [t.reshape(-1).view(torch.uint8) for t in (back[name], tensor.contiguous())]
        assert torch.equal(*bits), name


def test_the_stored_form_is_plain_numpy_bytes() -> None:
    stored = StoredWeights.from_tensors({"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)})
    assert all(isinstance(a, np.ndarray) and a.dtype == np.uint8 for a in stored.data.values())
    assert {name: a.size for name, a in stored.data.items()} == {"w": 24, "b": 6}


def test_stored_copy_does_not_follow_later_changes_to_the_source() -> None:
    weight = torch.ones(4)
    stored = StoredWeights.from_tensors({"w": weight})
    weight.add_(1.0)  # the learner's next optimizer step must not change weights already pushed
    assert stored.tensors()["w"].tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("stored", [True, False])
def test_as_tensors_takes_stored_weights_or_a_state_dict(stored: bool) -> None:
    state = {"w": torch.arange(3.0)}
    given = StoredWeights.from_tensors(state) if stored else state
    assert torch.equal(as_tensors(given)["w"], state["w"])
