"""What of the (GPU-only, untested here) NCCL sync can be checked on CPU: lazy imports, metadata, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rlvr_ray.sync.nccl import EXTENSION_CLASS, NcclWeightReceiver, engine_join, engine_receive, tensor_meta


def test_importing_the_module_pulls_in_neither_torch_nor_vllm() -> None:
    code = "import sys, rlvr_ray.sync.nccl; print(sorted(m for m in ('torch', 'vllm') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_tensor_meta_lists_name_dtype_shape_in_order() -> None:
    state = {"b.weight": torch.zeros(2, 3), "a.bias": torch.zeros(4, dtype=torch.bfloat16)}
    assert tensor_meta(state) == [("b.weight", "float32", (2, 3)), ("a.bias", "bfloat16", (4,))]


def test_extension_class_path_names_the_receiver_and_methods_are_prefixed() -> None:
    module, _, name = EXTENSION_CLASS.rpartition(".")
    assert getattr(sys.modules[module], name) is NcclWeightReceiver
    public = [m for m in vars(NcclWeightReceiver) if not m.startswith("__")]
    assert public and all(m.startswith("rlvr_") for m in public)  # never shadows a vLLM worker method


@pytest.mark.parametrize("call", [lambda e: engine_join(e, "127.0.0.1", 1, 1, 2), lambda e: engine_receive(e, [])])
def test_nccl_needs_a_vllm_engine(call) -> None:  # type: ignore[no-untyped-def]
    class TorchLikeEngine:
        pass

    with pytest.raises(TypeError, match=r"rollout\.engine=vllm"):
        call(TorchLikeEngine())
