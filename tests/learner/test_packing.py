"""Packed rows (each shared prompt once, block attention mask) against the plain padded forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr_ray.config import ModelConfig
from rlvr_ray.learner.batch import TrainBatch, build_train_batch
from rlvr_ray.learner.learner import packed
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.learner.packing import pack_rows, prompt_lengths
from rlvr_ray.policy import build_model
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import RolloutBatch, ScoredBatch, Scores

VOCAB = Vocab(13, ("+", "-", "*"))
SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
torch.set_num_threads(1)


def grouped_batch(seed: int, groups: int = 5, group_size: int = 4) -> TrainBatch:
    """Prompts of 2-9 tokens, each sampled ``group_size`` times with completions of 1-11 tokens (one empty-ish:
    a lone <eoe>), in shuffled row order, as the learner's mini-batches see them."""
    rng = np.random.default_rng(seed)
    prompts, completions, group_ids = [], [], []
    for g in range(groups):
        prompt = [VOCAB.boe, *rng.integers(0, 13, size=rng.integers(1, 9)).tolist()]
        for _ in range(group_size):
            body = rng.integers(0, 16, size=rng.integers(0, 11)).tolist()
            prompts.append(prompt)
            completions.append([*body, VOCAB.eoe])
            group_ids.append(g)
    order = rng.permutation(len(prompts))
    n = len(prompts)
    rollouts = RolloutBatch(
        prompt_ids=[prompts[i] for i in order],
        completion_ids=[completions[i] for i in order],
        logprobs=[[-1.0] * len(completions[i]) for i in order],
        group_ids=np.asarray(group_ids)[order],
        answers=np.zeros(n, np.int64),
        complexities=np.ones(n, np.int64),
        policy_version=np.zeros(n, np.int64),
    )
    r = np.zeros(n, np.float32)
    return build_train_batch(ScoredBatch(rollouts, Scores(r, r, r, r, r)), VOCAB.pad)


@pytest.mark.parametrize("width", [8, 64])
def test_packed_rows_hold_each_prompt_once_and_map_back_to_every_token(width: int) -> None:
    batch = grouped_batch(seed=0)
    lengths = batch.attention_mask.sum(dim=-1)
    prompts = prompt_lengths(batch.attention_mask, batch.mask)
    pack = pack_rows(batch.input_ids, batch.attention_mask, prompts, width=width)
    distinct = {tuple(batch.input_ids[i, : prompts[i]].tolist()): int(prompts[i]) for i in range(len(batch))}
    assert bool(pack.attention_mask[:, 0].diagonal(dim1=-2, dim2=-1).all())  # no empty softmax row
    flat_ids, flat_pos = pack.input_ids.flatten(), pack.position_ids.flatten()
    for i in range(len(batch)):
        n = int(lengths[i])
        assert flat_ids[pack.source[i, :n]].tolist() == batch.input_ids[i, :n].tolist()
        assert flat_pos[pack.source[i, :n]].tolist() == list(range(n))
    used = len(set(pack.source[batch.attention_mask.bool()].tolist()))
    assert used == sum(distinct.values()) + int((lengths - prompts).sum())  # each distinct prompt once
    assert pack.input_ids.shape[1] >= min(width, int(lengths.max()))


def test_packed_forward_and_backward_equal_the_padded_ones() -> None:
    torch.manual_seed(0)
    module = PolicyWithValue(build_model(SMALL, VOCAB, seed=3), with_value_head=True)
    torch.nn.init.normal_(module.value_head.weight)  # type: ignore[union-attr]  # zero-initialised otherwise
    batch = grouped_batch(seed=1)
    weights = torch.randn_like(batch.mask) * batch.mask
    results = []
    for pack in (None, packed(batch)):
        module.zero_grad()
        out = module(batch.input_ids, batch.attention_mask, 0.7, True, pack)
        assert out.entropy is not None and out.values is not None
        loss = (out.logp * weights).sum() + (out.entropy * batch.mask).sum() + (out.values * weights).sum()
        loss.backward()
        grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
        results.append((out.logp * batch.mask, out.entropy * batch.mask, out.values * batch.mask, grads))
    (logp, entropy, values, grads), (p_logp, p_entropy, p_values, p_grads) = results
    assert torch.allclose(p_logp, logp, atol=1e-5) and torch.allclose(p_entropy, entropy, atol=1e-5)
    assert torch.allclose(p_values, values, atol=1e-5)
    assert len(grads) == len(p_grads) > 0
    for g, p_g in zip(grads, p_grads, strict=True):
        assert float((p_g - g).norm()) <= 1e-5 * float(g.norm())
    assert float(logp.abs().sum()) > 1.0  # a real comparison, not of zeros


def test_a_completion_does_not_see_another_row_of_its_pack() -> None:
    """Changing one row's completion leaves every other row's packed logprobs exactly as they were."""
    module = PolicyWithValue(build_model(SMALL, VOCAB, seed=4), with_value_head=False)
    batch = grouped_batch(seed=2)
    row = int(torch.argmax(batch.mask.sum(dim=-1)))
    changed = TrainBatch(**{**batch.__dict__, "input_ids": batch.input_ids.clone()})
    last = int(batch.attention_mask[row].sum()) - 2  # a completion token before its <eoe>
    changed.input_ids[row, last] = (changed.input_ids[row, last] + 1) % 13
    with torch.no_grad():
        before = module(batch.input_ids, batch.attention_mask, 1.0, pack=packed(batch)).logp
        after = module(changed.input_ids, changed.attention_mask, 1.0, pack=packed(changed)).logp
    others = torch.arange(len(batch)) != row
    assert torch.equal(before[others], after[others])
    assert not torch.equal(before[row], after[row])
