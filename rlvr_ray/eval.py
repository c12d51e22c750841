"""Held-out evaluation: greedy decoding, scored by the verifier's own reward functions (no drift possible).

python -m rlvr_ray.eval --model DIR [--complexities 1-6 --n 200 --seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Completion, SamplingSpec

GenerateFn = Callable[[list[list[int]], SamplingSpec], list[Completion]]


@dataclass
class EvalRow:
    """One complexity's held-out results (rates in [0, 1])."""

    complexity: int
    n: int
    accuracy: float
    boxed: float
    chain_exact: float


def held_out_problems(vocab: Vocab, complexity: int, n: int, seed: int):  # -> Problems
    """The fixed held-out set of one complexity (its own seed stream per complexity)."""
    from rlvr_ray.task.rpn import generate_problems

    return generate_problems(vocab, n, (complexity, complexity), seed * 1009 + complexity)


def evaluate(
    generate: GenerateFn, vocab: Vocab, complexities: Sequence[int], n: int, seed: int, max_tokens: int
) -> list[EvalRow]:
    """Greedy-decode ``n`` held-out problems per complexity with ``generate`` and score them."""
    from rlvr_ray.verify.rewards import chain_exact, score_batch

    rows = []
    spec = SamplingSpec(n=1, max_tokens=max_tokens, stop_token_id=vocab.eoe, greedy=True)
    for k in complexities:
        problems = held_out_problems(vocab, k, n, seed)
        prompts = problems.prompt_lists()
        completions = [c.token_ids for c in generate(prompts, spec)]
        scores = score_batch(prompts, completions, problems.answers.tolist(), vocab, "correct", 0.0, 1.0)
        exact = [chain_exact(p, c, vocab) for p, c in zip(prompts, completions, strict=True)]
        rows.append(EvalRow(k, n, float(scores.correct.mean()), float(scores.boxed.mean()), float(np.mean(exact))))
    return rows


def rows_to_metrics(rows: Sequence[EvalRow], prefix: str = "eval") -> dict[str, float]:
    """``eval/accuracy_k3``-style metrics plus ``eval/accuracy`` (mean over complexities)."""
    metrics = {}
    for row in rows:
        metrics[f"{prefix}/accuracy_k{row.complexity}"] = row.accuracy
        metrics[f"{prefix}/boxed_k{row.complexity}"] = row.boxed
        metrics[f"{prefix}/chain_exact_k{row.complexity}"] = row.chain_exact
    metrics[f"{prefix}/accuracy"] = float(np.mean([r.accuracy for r in rows]))
    return metrics


def format_table(rows: Sequence[EvalRow], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'k':>3} {'n':>5} {'accuracy':>9} {'boxed':>7} {'chain':>7}")
    for r in rows:
        lines.append(f"{r.complexity:>3} {r.n:>5} {r.accuracy:>9.3f} {r.boxed:>7.3f} {r.chain_exact:>7.3f}")
    return "\n".join(lines)


def format_before_after(before: Sequence[EvalRow], after: Sequence[EvalRow]) -> str:
    lines = [f"{'k':>3} {'n':>5} {'acc before':>11} {'acc after':>10} {'chain before':>13} {'chain after':>12}"]
    for b, a in zip(before, after, strict=True):
        accuracy = f"{b.accuracy:>11.3f} {a.accuracy:>10.3f}"
        chain = f"{b.chain_exact:>13.3f} {a.chain_exact:>12.3f}"
        lines.append(f"{a.complexity:>3} {a.n:>5} {accuracy} {chain}")
    return "\n".join(lines)


def parse_complexities(text: str) -> list[int]:
    """``"1-6"`` or ``"1,3,5"`` -> list of ints >= 1; ValueError with the allowed forms otherwise."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-", 1))
            values = list(range(low, high + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--complexities {text!r}: use a range like 1-6 or a list like 1,3,5 (each >= 1)")
    return values


def evaluate_model_dir(
    model_dir: str, complexities: Sequence[int], n: int, seed: int, max_tokens: int
) -> list[EvalRow]:
    """Evaluate a saved policy directory with the plain-torch engine (greedy, fp32)."""
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.rollout.torch_engine import TorchEngine

    vocab = load_vocab(model_dir)
    engine = TorchEngine(model_dir)
    return evaluate(engine.generate, vocab, complexities, n, seed, max_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlvr_ray.eval", description="Greedy held-out evaluation.")
    parser.add_argument("--model", required=True, help="policy directory (HF format, written by rlvr_ray)")
    parser.add_argument("--complexities", default="1-6", help="range 1-6 or list 1,3,5")
    parser.add_argument("--n", type=int, default=200, help="problems per complexity")
    parser.add_argument("--seed", type=int, default=12345, help="held-out set seed")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation budget per problem")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    try:
        complexities = parse_complexities(args.complexities)
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        if not (Path(args.model) / "config.json").is_file():
            raise ValueError(f"--model {args.model}: not a policy directory (no config.json)")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    rows = evaluate_model_dir(args.model, complexities, args.n, args.seed, args.max_tokens)
    print(format_table(rows, f"held-out greedy accuracy: {args.model}"))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
