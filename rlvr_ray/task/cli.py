"""``python -m rlvr_ray.task``: sample problems as JSONL, or score JSONL completions with the training rewards.

    python -m rlvr_ray.task sample --n 5 --seed 0 --complexity 1-4 [--p 13 --operators +-*] [--split eval] [--out FILE]
    python -m rlvr_ray.task score --input FILE [--p 13 --operators +-* --boxed-weight 0.3 --correct-weight 0.7]

Exit codes: 0 ok; 1 some input line of ``score`` was bad (it is reported on stderr, the others are still
written); 2 bad arguments (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rlvr_ray.task.split import SPLITS
from rlvr_ray.task.vocab import ALLOWED_OPERATORS, Vocab

MAX_P = 1000  # same bound as TaskConfig.p


class _UsageError(Exception):
    """A bad command line; main prints it as one line and returns 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print the usage block and sys.exit(2)
        raise _UsageError(f"{self.prog}: error: {message}")


def _modulus(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in 2..{MAX_P}, got {text!r}") from None
    if not 2 <= p <= MAX_P:
        raise argparse.ArgumentTypeError(f"must be an integer in 2..{MAX_P}, got {p}")
    return p


def _operators(text: str) -> tuple[str, ...]:
    ops = tuple(text)
    if not ops or any(op not in ALLOWED_OPERATORS for op in ops) or len(set(ops)) != len(ops):
        allowed = "".join(ALLOWED_OPERATORS)
        raise argparse.ArgumentTypeError(
            f"must be a non-empty ordered subset of {allowed} without repeats, got {text!r}"
        )
    return ops


def _complexity(text: str) -> tuple[int, int]:
    """``K`` or ``LOW-HIGH`` (inclusive), 1 <= LOW <= HIGH."""
    low_text, _, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text or low_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be K or MIN-MAX with integers >= 1, got {text!r}") from None
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(f"must be K or MIN-MAX with 1 <= MIN <= MAX, got {text!r}")
    return low, high


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a non-negative {kind.__name__}, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be a non-negative {kind.__name__}, got {text!r}")
        return value

    return parse


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p", type=_modulus, default=13, help="modulus (default 13)")
    parser.add_argument(
        "--operators", type=_operators, default=ALLOWED_OPERATORS, help="ordered subset of +-* (default +-*)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m rlvr_ray.task", description=__doc__.split("\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{sample,score}")
    sample = commands.add_parser("sample", help="write N problems as JSONL")
    sample.add_argument("--n", type=_non_negative(int), default=10, help="number of problems (default 10)")
    sample.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    sample.add_argument("--complexity", type=_complexity, default=(1, 4), help="K or MIN-MAX operators (default 1-4)")
    sample.add_argument(
        "--split", choices=SPLITS, default="all", help="all, or only the train / held-out eval side (default all)"
    )
    sample.add_argument("--out", help="output file (default stdout)")
    _add_task_options(sample)
    score = commands.add_parser("score", help="add boxed/correct/combined/step to JSONL prompt/completion/answer")
    score.add_argument("--input", required=True, help="JSONL file, or - for stdin")
    score.add_argument("--boxed-weight", type=_non_negative(float), default=0.3, help="default 0.3")
    score.add_argument("--correct-weight", type=_non_negative(float), default=0.7, help="default 0.7")
    _add_task_options(score)
    return parser


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """``--operators -+`` -> ``--operators=-+``: argparse would read a value starting with '-' as an option."""
    out = list(argv)
    for i in range(len(out) - 2, -1, -1):
        if out[i] == "--operators" and out[i + 1].startswith("-"):
            out[i : i + 2] = [f"--operators={out[i + 1]}"]
    return out


# ---------------------------------------------------------------------------------------------------------------
# sample


def _write_samples(args: argparse.Namespace, vocab: Vocab, out: TextIO) -> None:
    from rlvr_ray.task.rpn import generate_problems  # jax only for this command

    try:
        problems = generate_problems(vocab, args.n, args.complexity, args.seed, split=args.split)
    except ValueError as err:  # a split with too few prompts of these complexities
        raise _UsageError(f"error: {err}") from None
    rows = zip(
        problems.prompt_lists(), problems.completion_lists(), problems.answers, problems.complexities, strict=True
    )
    for prompt, completion, answer, complexity in rows:
        record = {
            "prompt": vocab.decode(prompt),
            "completion": vocab.decode(completion),
            "answer": int(answer),
            "complexity": int(complexity),
        }
        out.write(json.dumps(record) + "\n")


def _sample(args: argparse.Namespace, vocab: Vocab) -> int:
    if args.out is None:
        _write_samples(args, vocab, sys.stdout)
        return 0
    try:
        with open(args.out, "w") as out:
            _write_samples(args, vocab, out)
    except OSError as err:
        raise _UsageError(f"error: cannot write --out {args.out!r}: {err.strerror or err}") from None
    return 0


# ---------------------------------------------------------------------------------------------------------------
# score


class _LineError(ValueError):
    """What is wrong with one input line of ``score``."""


def _parse_line(line: str, vocab: Vocab) -> tuple[dict[str, Any], list[int], list[int], int]:
    """A JSON object with string prompt/completion and an int answer in [0, p) -> (record, ids, ids, answer)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise _LineError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise _LineError(f"expected a JSON object with keys prompt, completion, answer; got {type(record).__name__}")
    missing = [key for key in ("prompt", "completion", "answer") if key not in record]
    if missing:
        raise _LineError(f"missing key(s) {', '.join(missing)} (need prompt, completion, answer)")
    for key in ("prompt", "completion"):
        if not isinstance(record[key], str):
            raise _LineError(f"{key} must be a string of space-separated tokens, got {type(record[key]).__name__}")
    answer = record["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < vocab.p:
        raise _LineError(f"answer must be an integer in 0..{vocab.p - 1}, got {answer!r}")
    try:
        return record, vocab.encode(record["prompt"]), vocab.encode(record["completion"]), answer
    except ValueError as err:
        raise _LineError(str(err)) from None


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(path) as handle:
            return handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise _UsageError(f"error: cannot read --input {path!r}: {reason}") from None


def _score(args: argparse.Namespace, vocab: Vocab) -> int:
    from rlvr_ray.verify.rewards import score_batch

    parsed, bad = [], 0
    for number, line in enumerate(_read_lines(args.input), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are not records
        try:
            parsed.append(_parse_line(line, vocab))
        except _LineError as err:
            print(f"{args.input}: line {number}: {err}", file=sys.stderr)
            bad += 1
    records = [record for record, _, _, _ in parsed]
    prompts, completions, answers = [p for _, p, _, _ in parsed], [c for _, _, c, _ in parsed], [a for *_, a in parsed]
    scores = score_batch(prompts, completions, answers, vocab, "combined", args.boxed_weight, args.correct_weight)
    for i, record in enumerate(records):
        for name in ("boxed", "correct", "combined", "step"):
            record[name] = round(float(getattr(scores, name)[i]), 6)  # float32 -> short decimal
        sys.stdout.write(json.dumps(record) + "\n")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 some bad input line, 2 bad arguments)."""
    args_in = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(_join_dash_values(args_in))
        vocab = Vocab(args.p, tuple(args.operators))
        return _sample(args, vocab) if args.command == "sample" else _score(args, vocab)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help / --version print and exit 0 through argparse
        return exit_.code if isinstance(exit_.code, int) else 0
