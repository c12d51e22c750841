"""The engine interface every rollout backend implements, and the factory that picks one by name.

An engine turns prompts (token-id lists) into completions with one policy, and takes new weights in place.
Contract (shared by :mod:`~rlvr_ray.rollout.torch_engine` and :mod:`~rlvr_ray.rollout.vllm_engine`):

- ``generate`` returns ``len(prompts) * spec.n`` completions, prompt-major (all samples of prompt 0 first), each
  with ``prompt_index`` = the prompt's index in ``prompts``.
- A completion stops after ``spec.stop_token_id`` (kept as its last token) or after ``spec.max_tokens`` tokens;
  a negative ``stop_token_id`` means "no stop token".
- ``logprobs[j]`` is the log-probability of ``token_ids[j]`` under the *temperature-scaled* policy before top-p,
  exactly ``log_softmax(logits / spec.temperature)`` as the learner computes it (also for greedy decoding, where
  ``spec.temperature`` only scales the reported logprobs).
- ``load_weights`` takes HF parameter names (``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``, ...)
  and updates the live engine in place; the next ``generate`` uses the new weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rlvr_ray.types import Completion, SamplingSpec

if TYPE_CHECKING:
    import torch

    from rlvr_ray.config import RolloutConfig

ENGINES = ("torch", "vllm")


@runtime_checkable
class Engine(Protocol):
    """One policy that samples completions and takes new weights in place."""

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        """``len(prompts) * spec.n`` completions, prompt-major."""
        ...

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the weights in place (HF parameter names); no restart."""
        ...

    def close(self) -> None:
        """Free the engine's memory; the object is unusable afterwards."""
        ...


def make_engine(cfg: RolloutConfig, model_dir: str, seed: int) -> Engine:
    """The engine ``cfg.engine`` names, loaded from the policy directory ``model_dir``.

    Heavy imports (torch, transformers, vllm) happen here, inside the process that runs the engine.
    """
    if cfg.engine == "torch":
        from rlvr_ray.rollout.torch_engine import TorchEngine

        return TorchEngine(model_dir, device=_torch_device(cfg))
    if cfg.engine == "vllm":
        from rlvr_ray.rollout.vllm_engine import VllmEngine

        return VllmEngine(cfg, model_dir, seed)
    raise ValueError(f"rollout.engine {cfg.engine!r} is not known; allowed: {', '.join(ENGINES)}")


def _torch_device(cfg: RolloutConfig) -> str:
    import torch

    return "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"


def check_request(prompts: list[list[int]], spec: SamplingSpec) -> None:
    """Fail loudly on requests no engine can honour (empty prompts, non-positive budgets)."""
    if spec.n < 1 or spec.max_tokens < 1:
        raise ValueError(f"SamplingSpec needs n >= 1 and max_tokens >= 1, got n={spec.n} max_tokens={spec.max_tokens}")
    if spec.temperature <= 0 or not 0 < spec.top_p <= 1:
        raise ValueError(f"SamplingSpec needs temperature > 0 and 0 < top_p <= 1, got {spec.temperature}, {spec.top_p}")
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise ValueError(f"prompts {empty[:5]} are empty; every prompt needs at least one token")


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 31-bit seed from ``seed`` and ``keys``, so nearby inputs give unrelated random streams.

    Each step is one SplitMix64 round (add the golden-ratio increment, then the finalizer), folding in one key.

    >>> derive_seed(0, 1) != derive_seed(1, 0)
    True
    >>> 0 <= derive_seed(7, 3, 2) < 2**31
    True
    """
    state = _splitmix64(seed)
    for key in keys:
        state = _splitmix64(state + key)
    return state & 0x7FFFFFFF


def _splitmix64(value: int) -> int:
    mask = 0xFFFFFFFFFFFFFFFF
    z = (value + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def check_weight_names(expected: set[str] | frozenset[str], state: Mapping[str, object]) -> None:
    """Raise KeyError unless ``state`` holds exactly the policy's parameter names (no silent partial update)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"weights do not fit the policy: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}"
        )
