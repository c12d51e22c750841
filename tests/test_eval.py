"""Held-out evaluation: scored by the verifier's reward functions; CLI table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr_ray.config import ModelConfig
from rlvr_ray.eval import EvalRow, evaluate, format_before_after, main, parse_complexities, rows_to_metrics
from rlvr_ray.policy import build_model, save_policy
from rlvr_ray.task.reference import target_completion
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Completion, SamplingSpec

VOCAB = Vocab(13, ("+", "-", "*"))


def oracle(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
    """The exact target completion for every prompt, from the plain-Python reference."""
    targets = [target_completion(prompt[1:], VOCAB) for prompt in prompts]
    return [Completion(i, t, [0.0] * len(t)) for i, t in enumerate(targets)]


def wrong_answer(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
    """Well-formed completions whose final answer is off by one."""
    good = oracle(prompts, spec)
    for c in good:
        c.token_ids[-2] = (c.token_ids[-2] + 1) % VOCAB.p
    return good


def test_oracle_scores_perfectly_and_wrong_answers_score_zero() -> None:
    rows = evaluate(oracle, VOCAB, [1, 3], n=40, seed=1, max_tokens=40)
    assert [(r.accuracy, r.boxed, r.chain_exact) for r in rows] == [(1.0, 1.0, 1.0)] * 2
    rows = evaluate(wrong_answer, VOCAB, [1, 3], n=40, seed=1, max_tokens=40)
    assert [(r.accuracy, r.boxed, r.chain_exact) for r in rows] == [(0.0, 1.0, 0.0)] * 2


def test_held_out_set_is_fixed_by_seed() -> None:
    seen: list[list[list[int]]] = []

    def record(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        seen.append(prompts)
        return oracle(prompts, spec)

    evaluate(record, VOCAB, [2], n=10, seed=5, max_tokens=40)
    evaluate(record, VOCAB, [2], n=10, seed=5, max_tokens=40)
    evaluate(record, VOCAB, [2], n=10, seed=6, max_tokens=40)
    assert seen[0] == seen[1] and seen[0] != seen[2]


def test_metrics_and_tables() -> None:
    rows = [EvalRow(1, 10, 0.5, 1.0, 0.25), EvalRow(2, 10, 0.25, 0.5, 0.0)]
    metrics = rows_to_metrics(rows)
    assert metrics["eval/accuracy"] == pytest.approx(0.375) and metrics["eval/chain_exact_k1"] == 0.25
    assert "0.500" in format_before_after(rows, rows)


@pytest.mark.parametrize(("text", "expected"), [("1-3", [1, 2, 3]), ("2,4", [2, 4]), ("5", [5])])
def test_parse_complexities(text: str, expected: list[int]) -> None:
    assert parse_complexities(text) == expected


@pytest.mark.parametrize("text", ["0-2", "a-b", "", "1,x"])
def test_parse_complexities_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="range like 1-6"):
        parse_complexities(text)


def test_cli_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_policy(
        build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64), VOCAB),
        VOCAB,
        tmp_path / "m",
    )
    assert main(["--model", str(model), "--complexities", "1-2", "--n", "8", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and out.count("\n") >= 3
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["complexity"] for r in rows] == [1, 2] and all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path), "--n", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err
