"""``python -m rlvr_ray.task``: sample and score, in-process through main() and once as a real subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr_ray.task.cli import main
from rlvr_ray.task.rpn import generate_problems
from rlvr_ray.task.vocab import Vocab

V13 = Vocab(13, ("+", "-", "*"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_stdout_matches_generate_problems(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["sample", "--n", "20", "--seed", "4", "--complexity", "1-4"], capsys)
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    problems = generate_problems(V13, 20, (1, 4), 4)
    assert [r["prompt"] for r in records] == [V13.decode(p) for p in problems.prompt_lists()]
    assert [r["completion"] for r in records] == [V13.decode(c) for c in problems.completion_lists()]
    assert [r["answer"] for r in records] == problems.answers.tolist()
    assert [r["complexity"] for r in records] == problems.complexities.tolist()
    assert list(records[0]) == ["prompt", "completion", "answer", "complexity"]
    assert out.splitlines()[0].startswith('{"prompt": "<boe> ')


@pytest.mark.parametrize(("split", "held_out"), [("eval", True), ("train", False)])
def test_sample_one_side_of_the_split(split: str, held_out: bool, capsys: pytest.CaptureFixture[str]) -> None:
    from rlvr_ray.task.split import is_eval_reference

    code, out, _ = run(["sample", "--n", "40", "--seed", "2", "--complexity", "1-2", "--split", split], capsys)
    prompts = [V13.encode(json.loads(line)["prompt"]) for line in out.splitlines()]
    assert code == 0 and len(prompts) == 40 and {is_eval_reference(p) for p in prompts} == {held_out}


def test_sample_from_an_empty_side_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", "--n", "3", "--complexity", "1", "--p", "2", "--operators", "*", "--split", "eval"]
    code, out, err = run(argv, capsys)  # none of the 4 prompts of p=2, k=1 is held out
    assert code == 2 and out == "" and err.startswith("error: the eval split") and err.count("\n") == 1


def test_sample_single_complexity_operators_and_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "problems.jsonl"
    argv = [
        "sample",
        "--n",
        "7",
        "--seed",
        "1",
        "--complexity",
        "3",
        "--p",
        "7",
        "--operators",
        "-+",
        "--out",
        str(target),
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0 and out == ""
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(records) == 7 and {r["complexity"] for r in records} == {3}
    tokens = {t for r in records for t in (r["prompt"] + " " + r["completion"]).split()}
    assert tokens <= set(Vocab(7, ("-", "+")).tokens) and "*" not in tokens


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sample", "--operators", "+/"], "--operators"),
        (["sample", "--operators", "++"], "without repeats"),
        (["sample", "--p", "1"], "--p: must be an integer in 2..1000"),
        (["sample", "--p", "x"], "--p"),
        (["sample", "--complexity", "0"], "--complexity"),
        (["sample", "--complexity", "3-1"], "MIN <= MAX"),
        (["sample", "--complexity", "a-b"], "--complexity"),
        (["sample", "--n", "-1"], "--n"),
        (["sample", "--bogus"], "unrecognized arguments"),
        (["score"], "--input"),
        (["score", "--input", "/nonexistent/x.jsonl"], "cannot read --input"),
        (["score", "--input", "x", "--boxed-weight", "-1"], "--boxed-weight"),
        ([], "required"),
        (["train"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["sample", "--help"], capsys)
    assert code == 0 and "--complexity" in out


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD = {"prompt": "<boe> 3 4 + 2 *", "completion": "= 7 2 * = 1 <eoe>", "answer": 1}
HALF = {"prompt": "<boe> 3 4 + 2 *", "completion": "= 7 2 * = 2 <eoe>", "answer": 1, "id": "keep-me"}


def test_score_all_good(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD), "", json.dumps(HALF)])
    code, out, err = run(["score", "--input", path], capsys)
    assert code == 0 and err == ""
    first, second = (json.loads(line) for line in out.splitlines())
    assert first == {**GOOD, "boxed": 1.0, "correct": 1.0, "combined": 1.0, "step": 1.0}
    assert second == {**HALF, "boxed": 1.0, "correct": 0.0, "combined": 0.3, "step": 0.5}


def test_score_weights_and_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(HALF) + "\n"))
    code, out, _ = run(["score", "--input", "-", "--boxed-weight", "0.5", "--correct-weight", "2"], capsys)
    assert code == 0 and json.loads(out)["combined"] == 0.5


def test_score_round_trips_sampled_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--n", "30", "--seed", "2", "--p", "11", "--out", str(tmp_path / "s.jsonl")]) == 0
    code, out, _ = run(["score", "--input", str(tmp_path / "s.jsonl"), "--p", "11"], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(records) == 30
    assert all(r["boxed"] == r["correct"] == r["combined"] == r["step"] == 1.0 for r in records)


def test_score_bad_lines_are_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        json.dumps(GOOD),  # 1
        "{not json",  # 2
        json.dumps({"prompt": "<boe> 3 4 +", "completion": "= 7 x <eoe>", "answer": 7}),  # 3
        json.dumps({"prompt": "<boe> 3 4 +", "answer": 7}),  # 4
        json.dumps({**GOOD, "answer": 13}),  # 5
        json.dumps([1, 2]),  # 6
        json.dumps({**GOOD, "answer": "1"}),  # 7
        json.dumps({**GOOD, "prompt": 5}),  # 8
        json.dumps(HALF),  # 9
    ]
    code, out, err = run(["score", "--input", write_lines(tmp_path / "in.jsonl", lines)], capsys)
    assert code == 1
    assert [json.loads(line).get("id") for line in out.splitlines()] == [None, "keep-me"]  # good lines, in order
    errors = err.strip().splitlines()
    assert [e.split(": ")[1] for e in errors] == [f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert "not valid JSON" in errors[0]
    assert "unknown token 'x'; allowed: 0 1 2" in errors[1]
    assert "missing key(s) completion" in errors[2]
    assert "answer must be an integer in 0..12, got 13" in errors[3]
    assert "JSON object" in errors[4] and "got '1'" in errors[5] and "prompt must be a string" in errors[6]


def test_score_rejects_tokens_of_another_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD)])
    code, out, err = run(["score", "--input", path, "--operators", "+-"], capsys)  # no "*" in this vocabulary
    assert code == 1 and out == "" and "unknown token '*'" in err


def test_module_entry_point_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlvr_ray.task", "sample", "--n", "3", "--seed", "0", "--complexity", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0] == {"prompt": "<boe> 0 2 * 7 +", "completion": "= 0 7 + = 7 <eoe>", "answer": 7, "complexity": 2}
    assert len(records) == 3 and all(r["complexity"] == 2 for r in records)
    bad = subprocess.run([sys.executable, "-m", "rlvr_ray.task", "sample", "--p", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
