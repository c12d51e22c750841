"""The plain-torch engine against HF references: greedy, logprobs, seeds, stopping, order, weight updates."""

from __future__ import annotations

import pytest
import torch
from rollout_testkit import VOCAB, hf_greedy, hf_logprobs, max_abs_diff, mixed_prompts

from rlvr_ray.config import RolloutConfig
from rlvr_ray.policy import load_policy
from rlvr_ray.rollout import torch_engine
from rlvr_ray.rollout.engine import Engine, make_engine
from rlvr_ray.rollout.torch_engine import TorchEngine, nucleus
from rlvr_ray.types import SamplingSpec


def spec(**overrides: object) -> SamplingSpec:
    fields: dict = {"n": 1, "max_tokens": 12, "stop_token_id": VOCAB.eoe, "seed": 3} | overrides
    return SamplingSpec(**fields)


@pytest.fixture(scope="module")
def engine(policy_dir: str) -> TorchEngine:
    return TorchEngine(policy_dir)


def test_make_engine_builds_torch_engine_and_rejects_unknown_names(policy_dir: str) -> None:
    assert isinstance(make_engine(RolloutConfig(engine="torch"), policy_dir, seed=0), Engine)
    bad = RolloutConfig.model_construct(engine="jax")  # bypasses the Literal check on purpose
    with pytest.raises(ValueError, match="allowed: torch, vllm"):
        make_engine(bad, policy_dir, seed=0)


def test_greedy_equals_hf_generate_on_mixed_length_prompts(engine: TorchEngine, policy_dir: str) -> None:
    prompts = mixed_prompts(24, seed=1)
    assert len({len(p) for p in prompts}) > 3
    got = [c.token_ids for c in engine.generate(prompts, spec(greedy=True, max_tokens=14))]
    assert got == hf_greedy(policy_dir, prompts, max_tokens=14)
    assert any(c[-1] == VOCAB.eoe for c in got) and any(c[-1] != VOCAB.eoe for c in got)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_hf_forward_of_temperature_scaled_policy(
    engine: TorchEngine, policy_dir: str, temperature: float
) -> None:
    prompts = mixed_prompts(16, seed=2)
    completions = engine.generate(prompts, spec(n=3, temperature=temperature))
    reference = hf_logprobs(policy_dir, prompts, completions, temperature)
    assert max_abs_diff([c.logprobs for c in completions], reference) < 1e-5


def test_finished_rows_leave_the_batch_and_the_rest_decode_unchanged(
    engine: TorchEngine, policy_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every finished row dropped at once (fraction 1.0), greedy tokens are still HF's and sampled logprobs
    still the HF forward's: the cache, masks and positions follow the rows that stay."""
    kept: list[int] = []
    reorder = torch_engine.Cache.reorder_cache

    def spy(cache: torch_engine.Cache, index: torch.Tensor) -> None:
        kept.append(len(index))
        reorder(cache, index)

    monkeypatch.setattr(torch_engine, "COMPACT_FRACTION", 1.0)
    monkeypatch.setattr(torch_engine.Cache, "reorder_cache", spy)
    prompts = mixed_prompts(24, seed=1)
    greedy = [c.token_ids for c in engine.generate(prompts, spec(greedy=True, max_tokens=14))]
    assert greedy == hf_greedy(policy_dir, prompts, max_tokens=14)
    shrunk = len(kept)
    sampled = engine.generate(prompts, spec(n=3, temperature=0.7))
    assert max_abs_diff([c.logprobs for c in sampled], hf_logprobs(policy_dir, prompts, sampled, 0.7)) < 1e-5
    assert min(kept[:shrunk]) < 24 and min(kept[shrunk:]) < 72, "both calls must have dropped finished rows"


def test_logprobs_are_taken_before_top_p(engine: TorchEngine, policy_dir: str) -> None:
    prompts = mixed_prompts(16, seed=3)
    completions = engine.generate(prompts, spec(n=3, temperature=0.7, top_p=0.8))
    reference = hf_logprobs(policy_dir, prompts, completions, 0.7)
    assert max_abs_diff([c.logprobs for c in completions], reference) < 1e-5


def test_greedy_logprobs_use_the_spec_temperature(engine: TorchEngine, policy_dir: str) -> None:
    prompts = mixed_prompts(6, seed=4)
    completions = engine.generate(prompts, spec(greedy=True, temperature=0.5))
    assert max_abs_diff([c.logprobs for c in completions], hf_logprobs(policy_dir, prompts, completions, 0.5)) < 1e-5


def test_same_seed_reproduces_and_other_seed_differs(engine: TorchEngine) -> None:
    prompts = mixed_prompts(16, seed=5)
    first = engine.generate(prompts, spec(n=2, seed=11))
    again = engine.generate(prompts, spec(n=2, seed=11))
    other = engine.generate(prompts, spec(n=2, seed=12))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.logprobs for c in first] == [c.logprobs for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]


def test_completions_stop_at_stop_token_or_budget(engine: TorchEngine) -> None:
    completions = engine.generate(mixed_prompts(32, seed=6), spec(n=2, max_tokens=10))
    stopped = [c for c in completions if c.token_ids[-1] == VOCAB.eoe]
    assert stopped and len(stopped) < len(completions)
    for c in completions:
        assert VOCAB.eoe not in c.token_ids[:-1]
        assert len(c.logprobs) == len(c.token_ids) <= 10
        assert c.token_ids[-1] == VOCAB.eoe or len(c.token_ids) == 10


def test_negative_stop_token_means_full_budget(engine: TorchEngine) -> None:
    completions = engine.generate(mixed_prompts(8, seed=7), spec(max_tokens=9, stop_token_id=-1))
    assert all(len(c.token_ids) == 9 for c in completions)


def test_n_samples_come_prompt_major(engine: TorchEngine) -> None:
    prompts = mixed_prompts(5, seed=8)
    completions = engine.generate(prompts, spec(n=4))
    assert [c.prompt_index for c in completions] == [i for i in range(5) for _ in range(4)]
    groups = [{tuple(c.token_ids) for c in completions[4 * i : 4 * i + 4]} for i in range(5)]
    assert any(len(g) > 1 for g in groups), "samples of one prompt should differ"


def test_greedy_with_n_repeats_the_greedy_completion(engine: TorchEngine) -> None:
    completions = engine.generate(mixed_prompts(3, seed=9), spec(n=3, greedy=True))
    for i in range(3):
        assert len({tuple(c.token_ids) for c in completions[3 * i : 3 * i + 3]}) == 1


def test_tiny_top_p_samples_the_argmax(engine: TorchEngine) -> None:
    prompts = mixed_prompts(12, seed=10)
    sampled = engine.generate(prompts, spec(n=2, top_p=1e-6, temperature=1.3))
    greedy = engine.generate(prompts, spec(n=2, greedy=True))
    assert [c.token_ids for c in sampled] == [c.token_ids for c in greedy]


def test_nucleus_keeps_smallest_set_reaching_top_p() -> None:
    probs = torch.tensor([[0.0625, 0.5, 0.1875, 0.25], [0.75, 0.125, 0.0625, 0.0625]])
    assert nucleus(probs, 0.7).tolist() == [[0.0, 0.5, 0.0, 0.25], [0.75, 0.0, 0.0, 0.0]]
    assert nucleus(probs, 0.75).tolist() == [[0.0, 0.5, 0.0, 0.25], [0.75, 0.0, 0.0, 0.0]]
    assert nucleus(probs, 0.76).tolist() == [[0.0, 0.5, 0.1875, 0.25], [0.75, 0.125, 0.0, 0.0]]


def test_chunked_batches_give_the_same_greedy_completions(policy_dir: str, engine: TorchEngine) -> None:
    prompts = mixed_prompts(10, seed=11)
    small = TorchEngine(policy_dir, max_batch_rows=3)
    assert [c.token_ids for c in small.generate(prompts, spec(greedy=True))] == [
        c.token_ids for c in engine.generate(prompts, spec(greedy=True))
    ]


def test_load_weights_switches_to_the_new_model(policy_dir: str, other_policy_dir: str) -> None:
    engine = TorchEngine(policy_dir)
    prompts = mixed_prompts(12, seed=12)
    before = [c.token_ids for c in engine.generate(prompts, spec(greedy=True))]
    engine.load_weights(load_policy(other_policy_dir).state_dict())
    after = engine.generate(prompts, spec(n=2, temperature=0.7))
    assert [c.token_ids for c in engine.generate(prompts, spec(greedy=True))] == hf_greedy(
        other_policy_dir, prompts, 12
    )
    assert [c.token_ids for c in engine.generate(prompts, spec(greedy=True))] != before
    assert max_abs_diff([c.logprobs for c in after], hf_logprobs(other_policy_dir, prompts, after, 0.7)) < 1e-5


def test_load_weights_rejects_a_partial_or_foreign_state_dict(engine: TorchEngine, policy_dir: str) -> None:
    state = load_policy(policy_dir).state_dict()
    state.pop("lm_head.weight")
    with pytest.raises(KeyError, match="1 missing"):
        engine.load_weights(state)
    with pytest.raises(KeyError, match="1 unexpected"):
        engine.load_weights({**load_policy(policy_dir).state_dict(), "value_head.weight": torch.zeros(1)})


def test_bad_requests_fail_loudly(engine: TorchEngine) -> None:
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[VOCAB.boe], []], spec())
    with pytest.raises(ValueError, match="max_tokens"):
        engine.generate([[VOCAB.boe]], spec(max_tokens=0))
    with pytest.raises(ValueError, match="exceeds the policy's max_position_embeddings 128"):
        engine.generate([[VOCAB.boe] * 100], spec(max_tokens=29))
