"""Held-out evaluation: scored by the verifier's reward functions, on distinct prompts of the eval split; one
evaluator with the config's defaults; CLI table and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlvr_ray.config import ModelConfig, load_config
from rlvr_ray.eval import (
    EvalRow,
    eval_max_tokens,
    evaluate,
    evaluate_policy_dir,
    evaluate_run,
    format_before_after,
    format_table,
    main,
    parse_complexities,
    rows_to_metrics,
)
from rlvr_ray.policy import build_model, save_policy
from rlvr_ray.task.reference import target_completion
from rlvr_ray.task.split import is_eval_reference
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


def test_eval_prompts_are_distinct_held_out_prompts_and_the_real_count_is_reported() -> None:
    seen: dict[int, list[list[int]]] = {}

    def record(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        seen[(len(prompts[0]) - 2) // 2] = prompts
        return oracle(prompts, spec)

    rows = evaluate(record, VOCAB, [1, 3], n=200, seed=1, max_tokens=40)
    by_hand = [[VOCAB.boe, a, b, op] for a in range(13) for b in range(13) for op in (13, 14, 15)]
    k1_held_out = sorted(p for p in by_hand if is_eval_reference(p))  # 107 of the 507 k=1 prompts
    assert sorted(seen[1]) == k1_held_out  # all of them, each once: the k=1 split is smaller than n
    assert len(seen[3]) == len({tuple(p) for p in seen[3]}) == 200
    assert all(is_eval_reference(p) for p in seen[3])
    k3_space = 13**4 * 3**3 * 5  # operands, operators, Catalan(3) shapes
    assert [(r.complexity, r.n, r.space, r.held_out) for r in rows] == [(1, 107, 507, 107), (3, 200, k3_space, None)]
    table = format_table(rows)
    assert "k=1: all 107 held-out prompts used (of 507" in table and "k=3:" not in table


@pytest.mark.parametrize("batch_size", [1, 7, 40, 256])
def test_batch_size_caps_each_generate_call_and_changes_nothing_else(batch_size: int) -> None:
    calls: list[list[list[int]]] = []

    def record(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        calls.append(prompts)
        return oracle(prompts, spec) if len(calls) % 2 else wrong_answer(prompts, spec)  # odd calls answer right

    rows = evaluate(record, VOCAB, [2, 3], n=40, seed=1, max_tokens=40, batch_size=batch_size)
    assert max(len(c) for c in calls) == min(batch_size, 40)
    assert len(calls) == 2 * -(-40 // batch_size)
    whole: list[list[list[int]]] = []
    evaluate(lambda prompts, spec: whole.append(prompts) or oracle(prompts, spec), VOCAB, [2, 3], 40, 1, 40)
    assert [p for c in calls for p in c] == [p for c in whole for p in c]  # the same prompts, in the same order
    right = sum(len(c) for i, c in enumerate(calls) if i % 2 == 0)
    assert sum(r.accuracy * r.n for r in rows) == pytest.approx(right)  # each answer scored against its prompt


def test_run_eval_reads_eval_batch_size() -> None:
    cfg = load_config("train_rlvr_test", ["eval.batch_size=3", "eval.complexities=[1,2]", "eval.n=10"])
    sizes: list[int] = []
    evaluate_run(lambda prompts, spec: sizes.append(len(prompts)) or oracle(prompts, spec), VOCAB, cfg)
    assert sizes == [3, 3, 3, 1] * 2


def test_each_row_has_the_accuracy_of_the_most_common_held_out_answer() -> None:
    cfg = load_config("train_rlvr_model", ["eval.complexities=[1,3]"])
    seen: list[list[list[int]]] = []
    rows = evaluate_run(lambda prompts, spec: seen.append(prompts) or oracle(prompts, spec), VOCAB, cfg)
    constant = {r.complexity: r.constant_answer for r in rows}
    by_hand = [[VOCAB.boe, a, b, op] for a in range(13) for b in range(13) for op in (13, 14, 15)]
    answers = [target_completion(p[1:], VOCAB)[-2] for p in by_hand if is_eval_reference(p)]  # all 107 held out
    counts = [answers.count(v) for v in range(13)]
    assert constant[1] == max(counts) / 107 and list(constant) == [1, 3]
    k3_answers = [target_completion(p[1:], VOCAB)[-2] for p in seen[1]]
    assert rows[1].n == 200 and constant[3] == max(k3_answers.count(v) for v in range(13)) / 200
    assert 1 / 13 < constant[3] < 0.2
    assert math.isnan(EvalRow(1, 10, 0.5, 1.0, 0.25).constant_answer)  # unknown in a row made by hand


def test_one_set_of_defaults_from_the_config() -> None:
    model_cfg = load_config("train_rlvr_model")
    assert model_cfg.eval.complexities == [1, 2, 3, 4, 5, 6] and model_cfg.training.complexity_range == (1, 4)
    assert eval_max_tokens(model_cfg) == 43  # k=6 chains need up to 6*7+1 tokens; training generates 40
    assert eval_max_tokens(load_config("train_rlvr_model", ["eval.max_tokens=50"])) == 50
    assert eval_max_tokens(load_config("train_rlvr_test")) == 24  # training.max_generation_length


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


def tiny_policy(path: Path) -> Path:
    config = ModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
    return save_policy(build_model(config, VOCAB), VOCAB, path)


def test_cli_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_policy(tmp_path / "m")
    assert main(["--model", str(model), "--complexities", "1-2", "--n", "8", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and out.count("\n") >= 3
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [(r["complexity"], r["n"]) for r in rows] == [(1, 8), (2, 8)]


def test_cli_defaults_are_the_configs_and_it_runs_the_run_evaluator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_policy(tmp_path / "m")
    assert main(["--model", str(model), "--config-name", "train_rlvr_test", "--json", str(tmp_path / "t.json")]) == 0
    assert "max_tokens 24" in capsys.readouterr().out
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [(r["complexity"], r["n"]) for r in rows] == [(1, 32), (2, 32)]  # eval.complexities, eval.n
    same = evaluate_policy_dir(str(model), load_config("train_rlvr_test"))  # what a run's before/after tables call
    assert rows == [json.loads(json.dumps(r.__dict__)) for r in same]
    flags = ["--complexities", "2", "--n", "5", "--max-tokens", "9", "--seed", "3", "eval.n=7"]
    assert main(["--model", str(model), "--config-name", "train_rlvr_test", *flags]) == 0
    out = capsys.readouterr().out
    assert "seed 3, max_tokens 9" in out and out.splitlines()[-1].split()[:2] == ["2", "5"]  # flags win


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path), "--n", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err
    assert main(["--model", str(tmp_path), "--n", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: eval.n") and "\n" not in err
