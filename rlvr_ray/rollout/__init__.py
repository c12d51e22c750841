"""Stage 2, rollout: prompts -> completions with per-token logprobs of the temperature-scaled policy.

- :mod:`~rlvr_ray.rollout.engine`: the ``Engine`` protocol and ``make_engine(cfg, model_dir, seed)``.
- :mod:`~rlvr_ray.rollout.torch_engine`: plain-torch KV-cache sampler (fastest for tiny CPU policies; greedy eval).
- :mod:`~rlvr_ray.rollout.vllm_engine`: vLLM (CPU build here, CUDA on GPU clusters), weights updated in place.
- :mod:`~rlvr_ray.rollout.actor`: ``RolloutActor`` (one engine per Ray actor) and ``RolloutGroup`` (split, gather,
  respawn, sync).

Nothing heavy is imported here; engines import torch / vLLM inside the process that runs them.
"""
