"""Helpers of the rollout tests: tiny saved policies with peaked next-token distributions, prompts, HF references."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from rlvr_ray.config import ModelConfig
from rlvr_ray.policy import build_model, load_policy, save_policy
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Completion

VOCAB = Vocab(13, ("+", "-", "*"))
TINY = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)


def make_policy(out_dir: Path, seed: int, weight_std: float = 0.15) -> str:
    """A tiny policy whose matrices are redrawn with a larger std than the default init.

    With the default init every next-token distribution is nearly uniform, so greedy decoding would hinge on
    logit gaps of ~1e-6 and completions would rarely stop; std 0.15 gives gaps >= 1e-4, real stops, varied text.
    """
    model = build_model(TINY, VOCAB, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * weight_std)
    return str(save_policy(model, VOCAB, out_dir))


def mixed_prompts(count: int, seed: int = 0, min_body: int = 1, max_body: int = 8) -> list[list[int]]:
    """``<boe>`` then ``min_body..max_body`` random non-special tokens: lengths differ, so batches need padding."""
    rng = random.Random(seed)
    body = range(VOCAB.eq + 1)
    return [[VOCAB.boe, *rng.choices(body, k=rng.randint(min_body, max_body))] for _ in range(count)]


def hf_greedy(model_dir: str, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """``model.generate(do_sample=False)`` one unpadded prompt at a time (the reference for greedy decoding)."""
    model = load_policy(model_dir)
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_tokens,
            eos_token_id=VOCAB.eoe,
            pad_token_id=VOCAB.pad,
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs


@torch.no_grad()
def hf_logprobs(
    model_dir: str, prompts: list[list[int]], completions: list[Completion], temperature: float
) -> list[list[float]]:
    """``log_softmax(logits / T)`` of each completion's tokens from one plain HF forward over prompt + completion."""
    model = load_policy(model_dir)
    result = []
    for completion in completions:
        prompt = prompts[completion.prompt_index]
        logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        result.append(logprobs.gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0].tolist())
    return result


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


def mean_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    diffs = [abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)]
    return sum(diffs) / len(diffs)
