"""Held-out evaluation: greedy decoding, scored by the verifier's own reward functions (no drift possible).

The problems are distinct prompts of the eval side of the train/eval split (:mod:`rlvr_ray.task.split`), which
training never samples. One evaluator, one set of defaults: :func:`evaluate_run` reads ``cfg.eval`` and is what the
in-run evaluation, the before/after tables and the CLI all call.

python -m rlvr_ray.eval --model DIR [--config-name NAME] [--complexities 1-6 --n 200 --seed S --max-tokens T]
    [--json FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlvr_ray.config import RunConfig, load_config
from rlvr_ray.task.split import Split
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Completion, SamplingSpec

if TYPE_CHECKING:
    from rlvr_ray.task.heldout import ProblemSet

GenerateFn = Callable[[list[list[int]], SamplingSpec], list[Completion]]


@dataclass
class EvalRow:
    """One complexity's held-out results (rates in [0, 1]).

    n: problems actually evaluated (distinct prompts of the eval split; fewer than asked where the split is small).
    space: distinct prompts of this complexity; held_out: how many of them are in the eval split, where the space
    was small enough to count (None otherwise: then about EVAL_FRACTION of the space, far more than n).
    constant_answer: the accuracy of always giving the most common answer of these problems, what a policy that
    knows no arithmetic can score (about 0.11-0.13 at p=13, against 1/13 for a uniform guess); NaN in a row not
    made by :func:`evaluate`.
    """

    complexity: int
    n: int
    accuracy: float
    boxed: float
    chain_exact: float
    space: int = 0
    held_out: int | None = None
    constant_answer: float = math.nan

    @property
    def all_held_out(self) -> bool:
        """True when every held-out prompt of this complexity was evaluated (the split is no bigger than n)."""
        return self.held_out is not None and self.n >= self.held_out


def held_out_problems(vocab: Vocab, complexity: int, n: int, seed: int, split: Split = "eval") -> ProblemSet:
    """The fixed held-out set of one complexity: up to n distinct prompts of the eval split (its own seed per k)."""
    from rlvr_ray.task.heldout import distinct_problems

    return distinct_problems(vocab, complexity, n, seed * 1009 + complexity, split)


def evaluate(
    generate: GenerateFn,
    vocab: Vocab,
    complexities: Sequence[int],
    n: int,
    seed: int,
    max_tokens: int,
    split: Split = "eval",
    batch_size: int = 256,
) -> list[EvalRow]:
    """Greedy-decode up to ``n`` distinct held-out problems per complexity with ``generate`` and score them.

    ``split`` "train" draws from the training side instead (the SFT probe: never the held-out set). Each
    ``generate`` call gets at most ``batch_size`` prompts.
    """
    from rlvr_ray.verify.rewards import chain_exact, score_batch

    rows = []
    spec = SamplingSpec(n=1, max_tokens=max_tokens, stop_token_id=vocab.eoe, greedy=True)
    for k in complexities:
        held = held_out_problems(vocab, k, n, seed, split)
        problems = held.problems
        prompts = problems.prompt_lists()
        batches = (prompts[start : start + batch_size] for start in range(0, len(prompts), batch_size))
        completions = [c.token_ids for batch in batches for c in generate(batch, spec)]
        scores = score_batch(prompts, completions, problems.answers.tolist(), vocab, "correct", 0.0, 1.0)
        exact = [chain_exact(p, c, vocab) for p, c in zip(prompts, completions, strict=True)]
        rates = float(scores.correct.mean()), float(scores.boxed.mean()), float(np.mean(exact))
        constant = float(np.bincount(problems.answers).max() / len(problems))
        rows.append(EvalRow(k, len(problems), *rates, held.space, held.in_split, constant))
    return rows


def eval_max_tokens(cfg: RunConfig) -> int:
    """``eval.max_tokens``, else the longest completion the evaluated complexities can need (k(k+1)+1 for the
    largest k), and at least ``training.max_generation_length``."""
    from rlvr_ray.task.rpn import completion_width

    if cfg.eval.max_tokens is not None:
        return cfg.eval.max_tokens
    return max(cfg.training.max_generation_length, completion_width(max(cfg.eval.complexities)))


def evaluate_run(generate: GenerateFn, vocab: Vocab, cfg: RunConfig) -> list[EvalRow]:
    """THE held-out evaluation of a run (``cfg.eval``): the in-run eval, the before/after tables and the CLI."""
    e = cfg.eval
    return evaluate(generate, vocab, e.complexities, e.n, e.seed, eval_max_tokens(cfg), batch_size=e.batch_size)


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
    lines.append(f"{'k':>3} {'n':>5} {'held-out':>9} {'space':>9} {'accuracy':>9} {'boxed':>7} {'chain':>7}")
    for r in rows:
        held = "-" if r.held_out is None else str(r.held_out)
        space = str(r.space) if r.space < 10**9 else f"{r.space:.2e}"
        rates = f"{r.accuracy:>9.3f} {r.boxed:>7.3f} {r.chain_exact:>7.3f}"
        lines.append(f"{r.complexity:>3} {r.n:>5} {held:>9} {space:>9} {rates}")
    return "\n".join(lines + small_split_notes(rows))


def small_split_notes(rows: Sequence[EvalRow]) -> list[str]:
    """One line per complexity whose eval split is so small that all of it was used."""
    return [
        f"k={r.complexity}: all {r.held_out} held-out prompts used (of {r.space}; training sees the other "
        f"{r.space - (r.held_out or 0)}): a small held-out set, its accuracy is noisy"
        for r in rows
        if r.all_held_out
    ]


def format_before_after(before: Sequence[EvalRow], after: Sequence[EvalRow]) -> str:
    lines = [f"{'k':>3} {'n':>5} {'acc before':>11} {'acc after':>10} {'chain before':>13} {'chain after':>12}"]
    for b, a in zip(before, after, strict=True):
        accuracy = f"{b.accuracy:>11.3f} {a.accuracy:>10.3f}"
        chain = f"{b.chain_exact:>13.3f} {a.chain_exact:>12.3f}"
        lines.append(f"{a.complexity:>3} {a.n:>5} {accuracy} {chain}")
    return "\n".join(lines + small_split_notes(after))


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


def evaluate_policy_dir(model_dir: str, cfg: RunConfig) -> list[EvalRow]:
    """:func:`evaluate_run` of a saved policy directory with the plain-torch engine (greedy, fp32)."""
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.rollout.torch_engine import TorchEngine

    return evaluate_run(TorchEngine(model_dir).generate, load_vocab(model_dir), cfg)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as dotted overrides of the config's ``eval`` section (after the positional overrides)."""
    flags = {"complexities": args.complexities, "n": args.n, "seed": args.seed, "max_tokens": args.max_tokens}
    out = list(args.overrides)
    for name, value in flags.items():
        if value is not None:
            out.append(f"eval.{name}={value}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlvr_ray.eval",
        description="Greedy held-out evaluation; every default comes from the config's eval section.",
    )
    parser.add_argument("--model", required=True, help="policy directory (HF format, written by rlvr_ray)")
    parser.add_argument("--config-name", default="train_rlvr_model", help="config whose eval.* are the defaults")
    parser.add_argument("--complexities", default=None, help="range 1-6 or list 1,3,5 (default: eval.complexities)")
    parser.add_argument("--n", type=int, default=None, help="distinct problems per complexity (default: eval.n)")
    parser.add_argument("--seed", type=int, default=None, help="held-out set seed (default: eval.seed)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="generation budget (default: eval.max_tokens, see the config)"
    )
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    try:
        if args.complexities is not None:
            args.complexities = parse_complexities(args.complexities)
        cfg = load_config(args.config_name, cli_overrides(args))
        if not (Path(args.model) / "config.json").is_file():
            raise ValueError(f"--model {args.model}: not a policy directory (no config.json)")
    except ValueError as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    rows = evaluate_policy_dir(args.model, cfg)
    settings = f"seed {cfg.eval.seed}, max_tokens {eval_max_tokens(cfg)}, config {args.config_name}"
    print(format_table(rows, f"held-out greedy accuracy: {args.model} ({settings})"))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
