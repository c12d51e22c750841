"""Stage 6, weight sync: versioned push of the learner's weights to the rollout engines.

- :mod:`rlvr_ray.sync.object_store` (CPU, any cluster): ``push_weights(actors, state_dict, version, deadline_s)``
  puts the state dict in the Ray object store once and waits until every actor acknowledges ``version``.
- :mod:`rlvr_ray.sync.nccl` (GPU learner -> GPU vLLM engines, untested here): learner rank 0 broadcasts each
  tensor over an NCCL group that includes every engine worker; same version and deadline contract.

Both raise :class:`~rlvr_ray.sync.object_store.WeightSyncTimeout` when an engine does not acknowledge in time.
Nothing heavy is imported here.
"""
