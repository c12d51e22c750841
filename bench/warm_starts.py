"""Does the default RL config raise held-out accuracy from several SFT warm starts? One RL run from each.

    python bench/warm_starts.py --out outputs/bench_warm_starts \\
        --sft "early=sft.steps=150 sft.target_accuracy=null" \\
        --sft "mid=sft.steps=300 sft.target_accuracy=null" \\
        --warm late=outputs/warm_start \\
        --sft "prompt_loss=sft.steps=700 sft.target_accuracy=null sft.loss_on_prompt=true" \\
        [--steps 100 | --budget-s 300] [--eval-every 50] [--set key=value ...]
    # one more warm start into the same table (the others are kept; refused if measured with other settings)
    python bench/warm_starts.py --out outputs/bench_warm_starts --append \
        --sft "jump=sft.target_accuracy=0.3 sft.eval_every=10"
    python bench/warm_starts.py --smoke          # plumbing check: two tiny SFT policies, the test config, 6 steps

Warm starts: ``--warm LABEL=DIR`` reuses a policy directory; ``--sft "LABEL=OVERRIDES"`` trains one with
``python -m rlvr_ray.sft --config-name NAME --out OUT/warm/LABEL OVERRIDES`` (whitespace-separated SFT overrides;
reused when ``OUT/warm/LABEL`` already holds a policy made from the same overrides). Each built warm start gets the
project's ``warm_start.json`` (the task, model and SFT config it was trained with) and ``sft_run.json`` (command,
seconds, load average). Order on the command line is the order of the runs, strictly one at a time.

From each warm start: ``python -m rlvr_ray.main --config-name NAME model.init_dir=WARM output_dir=...
resume=false`` with the config's RL settings unchanged (only ``--set`` overrides, the step count or time budget,
the eval cadence, a checkpoint only at the end, and a private MLflow SQLite store). Held-out accuracy before and
after is the run's own evaluation (``eval_before.json``, ``eval_after.json``: greedy, the config's eval section),
the curve in between its MLflow ``eval/accuracy_k*`` on the ``time/train_s`` axis. For each warm start: mean k1-4
before -> after, the change with two standard errors: unpaired (per complexity sqrt(pb(1-pb)/n + pa(1-pa)/n),
combined over k1-4, as if before and after were independent samples) and paired (the warm start and the final
policy re-evaluated per prompt by the same ``evaluate_run``, which must reproduce the run's tables exactly; the SE
of the per-prompt differences, with the prompts gained and lost), per-complexity accuracies, RL steps, train
seconds, and whether it fell. ``--rescore`` adds the paired part to an earlier report. Outputs under ``--out``:
``warm_starts.json`` (rewritten after each run, so a stopped benchmark keeps what it measured) and
``warm_starts.md`` (the table). One run per warm start, one seed: run-to-run noise is not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr_ray.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
MEAN_KS = (1, 2, 3, 4)
SMOKE_SFT = ("tiny_short=sft.steps=20", "tiny_prompt_loss=sft.steps=60 sft.loss_on_prompt=true")


# bench/ is a folder of scripts, not a package: bench/peer_trl.py is imported as a sibling by name (one module,
# shared with its tests, which load it under the same name)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_trl as peer  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------
# Pure helpers


@dataclass
class WarmSpec:
    """One warm start: reuse ``path`` (``sft`` None) or train it with the SFT overrides ``sft``."""

    label: str
    path: Path | None = None
    sft: list[str] | None = None


def parse_warm(text: str) -> WarmSpec:
    """``LABEL=DIR`` -> a reused warm start; ValueError (one line) when malformed."""
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise ValueError(f"--warm {text!r}: expected LABEL=DIR, e.g. late=outputs/warm_start")
    return WarmSpec(check_label(label.strip()), path=Path(path.strip()))


def parse_sft(text: str) -> WarmSpec:
    """``LABEL=OVERRIDES`` (whitespace-separated SFT overrides, each ``sft.KEY=VALUE``) -> a warm start to train."""
    label, sep, rest = text.partition("=")
    overrides = shlex.split(rest)
    if not sep or not label.strip() or not overrides:
        raise ValueError(f"--sft {text!r}: expected 'LABEL=sft.KEY=VALUE ...', e.g. 'early=sft.steps=150'")
    bad = [o for o in overrides if not o.startswith("sft.") or "=" not in o]
    if bad:
        raise ValueError(f"--sft {text!r}: {bad[0]!r} is not an SFT override; allowed: sft.KEY=VALUE")
    return WarmSpec(check_label(label.strip()), sft=overrides)


def check_label(label: str) -> str:
    """A label names a directory under --out: letters, digits, '-' and '_' only."""
    if not all(c.isalnum() or c in "-_" for c in label):
        raise ValueError(f"warm-start label {label!r}: allowed characters are letters, digits, '-' and '_'")
    return label


def accuracies(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Eval rows (the project's ``EvalRow`` as dicts) -> {complexity: {"accuracy": a, "n": n}}."""
    return {int(r["complexity"]): {"accuracy": float(r["accuracy"]), "n": int(r["n"])} for r in rows}


def change(before: Mapping[int, Mapping[str, float]], after: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Mean k1-4 before and after, their difference and its standard error (independent binomial samples).

    ValueError when before and after do not cover the same complexities of k1-4, or one covers none of them.
    """
    ks = [k for k in MEAN_KS if k in before]
    if not ks or ks != [k for k in MEAN_KS if k in after]:
        raise ValueError(f"before covers k={sorted(before)}, after k={sorted(after)}: need the same ones of k1-4")
    mean_before = sum(before[k]["accuracy"] for k in ks) / len(ks)
    mean_after = sum(after[k]["accuracy"] for k in ks) / len(ks)

    def var(row: Mapping[str, float]) -> float:
        p = row["accuracy"]
        return p * (1 - p) / row["n"]

    se = math.sqrt(sum(var(before[k]) + var(after[k]) for k in ks)) / len(ks)
    delta = mean_after - mean_before
    return {"ks": ks, "mean_before": mean_before, "mean_after": mean_after, "delta": delta, "se": se,
            "fell": delta < 0, "verdict": verdict(delta, se)}  # fmt: skip


def verdict(delta: float, se: float) -> str:
    """'rose' / 'fell' when the change is more than 2 standard errors from 0, else 'within noise (rose|fell)'."""
    direction = "rose" if delta > 0 else "fell" if delta < 0 else "unchanged"
    if (se > 0 and abs(delta) > 2 * se) or (se == 0 and delta != 0):
        return direction
    return f"within noise ({direction})"


def paired_change(before: Mapping[int, Sequence[float]], after: Mapping[int, Sequence[float]]) -> dict[str, Any]:
    """Change of mean k1-4 from per-prompt outcomes (1.0 correct, 0.0 not) of the SAME prompts before and after:
    its standard error from the per-prompt differences (paired), and the prompts gained (0 -> 1) and lost (1 -> 0)
    per complexity. ValueError when the two do not cover the same prompts of the same complexities."""
    ks = [k for k in MEAN_KS if k in before]
    if not ks or ks != [k for k in MEAN_KS if k in after] or any(len(before[k]) != len(after[k]) for k in ks):
        raise ValueError("before and after must hold the same prompts of the same complexities of k1-4")
    delta = variance = 0.0
    gained, lost = {}, {}
    for k in ks:
        diffs = [a - b for a, b in zip(after[k], before[k], strict=True)]
        n = len(diffs)
        mean = sum(diffs) / n
        delta += mean / len(ks)
        variance += (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n if n > 1 else 0.0) / len(ks) ** 2
        gained[k], lost[k] = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    se = math.sqrt(variance)
    return {"delta": delta, "se_paired": se, "verdict_paired": verdict(delta, se), "gained": gained, "lost": lost}


def rl_command(
    config_name: str,
    overrides: Sequence[str],
    warm: Path,
    out: Path,
    tracking_uri: str,
    steps: int | None,
    budget_s: float | None,
    eval_every: int,
) -> list[str]:
    """``python -m rlvr_ray.main`` from ``warm``: a step count (``steps``) or a wall-time budget (``budget_s``,
    then peer_trl's command), with held-out evals every ``eval_every`` steps and a checkpoint only at the end."""
    if (steps is None) == (budget_s is None):
        raise ValueError("give exactly one of steps and budget_s")
    if budget_s is not None:
        return list(peer.project_command(config_name, overrides, warm, out, tracking_uri, budget_s, eval_every,
                                         10**6))  # fmt: skip
    return [
        sys.executable, "-m", "rlvr_ray.main", "--config-name", config_name, *overrides,
        f"model.init_dir={warm}", f"output_dir={out}", "resume=false", f"tracking.tracking_uri={tracking_uri}",
        f"training.ppo_steps={steps}", "training.samples_per_epoch=1000000000",
        f"training.eval_every={eval_every}", f"training.checkpoint_every={steps}",
    ]  # fmt: skip


def sft_command(config_name: str, out: Path, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "rlvr_ray.sft", "--config-name", config_name, "--out", str(out), *overrides]


def per_k(table: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    """'a1 / a2 / ...' accuracies of the complexities ``ks`` (a JSON table: string keys)."""
    return " / ".join(f"{table[str(k)]['accuracy']:.3f}" for k in ks)


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per warm start (SFT, mean k1-4 before -> after, change +- SE, per-k, steps, seconds)."""
    lines = [
        "| warm start | SFT steps | loss on prompt | mean k1-4 before -> after | change +- SE | verdict "
        "| paired SE | paired verdict "
        "| k1-4 before | k1-4 after | RL steps | train s | load 1 min before/after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c, sft, pair = r["change"], r["sft"], r.get("paired")
        paired_cells = f"{pair['se_paired']:.3f} | {pair['verdict_paired']}" if pair else "n/a | n/a"
        lines.append(
            f"| {r['label']} | {sft.get('steps_run', '?')} | {sft.get('loss_on_prompt', '?')} "
            f"| {c['mean_before']:.3f} -> {c['mean_after']:.3f} | {c['delta']:+.3f} +- {c['se']:.3f} "
            f"| {c['verdict']} | {paired_cells} | {per_k(r['before'], c['ks'])} | {per_k(r['after'], c['ks'])} "
            f"| {r['rl_steps']} | {r['train_s']:.0f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Runs


@dataclass
class Setup:
    config_name: str
    overrides: list[str]
    steps: int | None
    budget_s: float | None
    eval_every: int
    out: Path
    timeout_s: float
    results: list[dict[str, Any]] = field(default_factory=list)


def build_warm_start(setup: Setup, spec: WarmSpec) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) ``OUT/warm/LABEL`` with the spec's SFT overrides; returns it and what describes its SFT."""
    from rlvr_ray.sft import WARM_START_FILE, warm_start_key

    assert spec.sft is not None
    path = (setup.out / "warm" / spec.label).resolve()
    record = path.parent / f"{spec.label}.sft_run.json"
    cfg = load_config(setup.config_name, spec.sft)
    cmd = sft_command(setup.config_name, path, spec.sft)
    reusable = (path / "model.safetensors").is_file() and record.is_file()
    if reusable and json.loads(record.read_text()).get("overrides") == spec.sft:
        print(f"[warm] reusing {path}")
        return path, json.loads(record.read_text())
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    print("[warm] " + " ".join(cmd))
    load, started = os.getloadavg(), time.perf_counter()
    rc = peer.run_subprocess(cmd, path.parent / f"{spec.label}.sft.log", setup.timeout_s)
    if rc != 0 or not (path / "model.safetensors").is_file():
        raise RuntimeError(f"SFT of warm start {spec.label!r} exited {rc}; see {path.parent / spec.label}.sft.log")
    (path / WARM_START_FILE).write_text(json.dumps(warm_start_key(cfg)[1], indent=1, sort_keys=True))
    info = {"overrides": spec.sft, "command": cmd, "seconds": time.perf_counter() - started,
            "load_before": list(load), "load_after": list(os.getloadavg())}  # fmt: skip
    record.write_text(json.dumps(info, indent=1))
    return path, info


def describe_sft(path: Path, info: Mapping[str, Any]) -> dict[str, Any]:
    """SFT steps (the budget when no probe target can stop it early), loss_on_prompt, from ``warm_start.json``."""
    stored = path / "warm_start.json"
    if not stored.is_file():
        return {**info, "note": "no warm_start.json: SFT settings unknown"}
    sft = json.loads(stored.read_text())["sft"]
    steps = sft["steps"] if sft["target_accuracy"] is None else f"<={sft['steps']} (probe target)"
    return {**info, "steps_run": steps, "loss_on_prompt": sft["loss_on_prompt"], "sft_config": sft}


def per_prompt_correct(model_dir: Path, cfg: RunConfig) -> tuple[dict[int, list[float]], dict[int, float]]:
    """The project's held-out evaluation (``evaluate_run``: torch engine, greedy, the config's eval section) of a
    policy directory, kept per prompt: ({k: [1.0 correct / 0.0 not, in the eval set's order]}, {k: its table's
    accuracy}), the second to check that these are the outcomes behind the run's own tables."""
    from rlvr_ray.eval import evaluate_run, held_out_problems
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.rollout.torch_engine import TorchEngine
    from rlvr_ray.verify.rewards import score_batch

    engine, vocab = TorchEngine(str(model_dir)), load_vocab(model_dir)
    calls: list[tuple[list[list[int]], list[list[int]]]] = []

    def generate(prompts: list[list[int]], spec: Any) -> Any:
        completions = engine.generate(prompts, spec)
        calls.append((prompts, [list(c.token_ids) for c in completions]))
        return completions

    rows = evaluate_run(generate, vocab, cfg)
    outcomes = {}
    for row, (prompts, completions) in zip(rows, calls, strict=True):
        answers = held_out_problems(vocab, row.complexity, cfg.eval.n, cfg.eval.seed).problems.answers.tolist()
        scores = score_batch(prompts, completions, answers, vocab, "correct", 0.0, 1.0)
        outcomes[row.complexity] = [float(x) for x in scores.correct]
    return outcomes, {row.complexity: row.accuracy for row in rows}


def paired(setup: Setup, warm: Path, final: Path, before: Mapping[int, Mapping[str, float]],
           after: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:  # fmt: skip
    """:func:`paired_change` of the warm start and the final policy, re-evaluated per prompt; says whether the
    re-evaluation reproduced the run's own before/after tables (greedy decoding: it should, exactly)."""
    cfg = load_config(setup.config_name, setup.overrides)
    (b, b_acc), (a, a_acc) = per_prompt_correct(warm, cfg), per_prompt_correct(final, cfg)
    same = all(abs(b_acc[k] - before[k]["accuracy"]) < 1e-6 and abs(a_acc[k] - after[k]["accuracy"]) < 1e-6
               for k in before)  # fmt: skip
    return {**paired_change(b, a), "reproduces_run_tables": same}


def run_rl(setup: Setup, label: str, warm: Path) -> dict[str, Any]:
    """One RL run from ``warm``; its before/after tables, change, curve, steps and train seconds."""
    from rlvr_ray.tracking import RUN_ID_FILE

    out = (setup.out / "rl" / label).resolve()
    shutil.rmtree(out, ignore_errors=True)
    uri = f"sqlite:///{(setup.out / f'mlflow_{label}.db').resolve()}"
    (setup.out / f"mlflow_{label}.db").unlink(missing_ok=True)
    cmd = rl_command(setup.config_name, setup.overrides, warm.resolve(), out, uri, setup.steps, setup.budget_s,
                     setup.eval_every)  # fmt: skip
    print("[rl] " + " ".join(cmd))
    load, started = os.getloadavg(), time.perf_counter()
    rc = peer.run_subprocess(cmd, setup.out / f"rl_{label}.log", setup.timeout_s)
    wall_s, load_after = time.perf_counter() - started, os.getloadavg()
    if not (out / "eval_after.json").is_file() or not (out / RUN_ID_FILE).is_file():
        raise RuntimeError(f"RL from {label!r} exited {rc} without a final evaluation; see {setup.out}/rl_{label}.log")
    before = accuracies(json.loads((out / "eval_before.json").read_text())["rows"])
    after = accuracies(json.loads((out / "eval_after.json").read_text()))
    ks = sorted(before)
    keys = [f"eval/accuracy_k{k}" for k in ks] + ["time/train_s", "perf/step_s"]
    histories = peer.read_histories(uri, (out / RUN_ID_FILE).read_text().strip(), keys)
    curve, source = peer.project_curve(histories, ks, {k: v["accuracy"] for k, v in before.items()},
                                       {k: v["accuracy"] for k, v in after.items()})  # fmt: skip
    return {
        "label": label, "warm_start": str(warm), "command": cmd, "exit_code": rc,
        "paired": paired(setup, warm, out / "final_policy", before, after),
        "before": {str(k): v for k, v in before.items()}, "after": {str(k): v for k, v in after.items()},
        "change": change(before, after), "rl_steps": len(histories["perf/step_s"]),
        "train_s": curve[-1].train_s if curve else 0.0, "time_axis": source, "wall_s": wall_s,
        "curve": [asdict(p) for p in curve], "load_before": list(load), "load_after": list(load_after),
        "log": str(setup.out / f"rl_{label}.log"), "mlflow": uri,
    }  # fmt: skip


def settings(setup: Setup) -> dict[str, Any]:
    """What must be equal for two runs to share one table: config, overrides, length of the runs, eval cadence."""
    return {"config_name": setup.config_name, "overrides": setup.overrides, "steps": setup.steps,
            "budget_s": setup.budget_s, "eval_every": setup.eval_every}  # fmt: skip


def kept_results(report: Mapping[str, Any], current: Mapping[str, Any], labels: Sequence[str]) -> list[dict[str, Any]]:
    """The results of an earlier report that this invocation does not redo (``labels``), in their order.

    ValueError when the earlier report was measured with other settings: its rows would not be comparable."""
    differ = [key for key, value in current.items() if report.get(key) != value]
    if differ:
        earlier = {key: report.get(key) for key in differ}
        now = {key: current[key] for key in differ}
        raise ValueError(f"the earlier report was measured with {earlier}, this run with {now}")
    return [r for r in report["results"] if r["label"] not in labels]


def write_report(setup: Setup, argv: Sequence[str]) -> str:
    table = format_table(setup.results)
    report = {"argv": list(argv), **settings(setup), "machine": peer.machine_info(), "results": setup.results}
    (setup.out / "warm_starts.json").write_text(json.dumps(report, indent=2))
    (setup.out / "warm_starts.md").write_text(table + "\n")
    return table


def rescore(setup: Setup, report_path: Path) -> int:
    """Add :func:`paired` to each result of an earlier report (its warm start and ``OUT/rl/LABEL/final_policy``)."""
    report = json.loads(report_path.read_text())
    setup.config_name, setup.overrides = report["config_name"], report["overrides"]
    for r in report["results"]:
        before = {int(k): v for k, v in r["before"].items()}
        after = {int(k): v for k, v in r["after"].items()}
        final = setup.out / "rl" / r["label"] / "final_policy"
        r["paired"] = paired(setup, Path(r["warm_start"]), final, before, after)
        print(f"[warm] {r['label']}: {r['paired']}")
    report_path.write_text(json.dumps(report, indent=2))
    (setup.out / "warm_starts.md").write_text(format_table(report["results"]) + "\n")
    print(format_table(report["results"]))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Driver


def _arg(parse: Any) -> Any:
    """An argparse ``type`` that keeps the parser's one-line message (argparse would replace a ValueError's)."""

    def convert(text: str) -> WarmSpec:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    return convert


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--warm", dest="specs", action="append", type=_arg(parse_warm), default=[],
                   help="LABEL=DIR: reuse this policy directory")  # fmt: skip
    p.add_argument("--sft", dest="specs", action="append", type=_arg(parse_sft),
                   help="'LABEL=sft.KEY=VALUE ...': train this warm start")  # fmt: skip
    p.add_argument("--config-name", default="train_rlvr_model", help="config of SFT and RL (its defaults are tested)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="RL config override (all runs)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default 100)")
    p.add_argument("--budget-s", type=float, default=None, help="instead of --steps: training.time_budget_s")
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out evals")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="interrupt one SFT or RL run after this")
    p.add_argument("--out", type=Path, default=Path("outputs/bench_warm_starts"))
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the other warm starts of an earlier warm_starts.json under --out (same settings)",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="no new runs: add the paired standard error to every result of --out's warm_starts.json",
    )
    p.add_argument("--smoke", action="store_true", help="test config, two tiny SFT warm starts, 6 RL steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.config_name, args.eval_every = "train_rlvr_test", 3
        args.specs = [parse_sft(text) for text in SMOKE_SFT]
        args.steps = args.steps or 6
        args.out = args.out if args.out != Path("outputs/bench_warm_starts") else Path("outputs/bench_warm_smoke")
    if args.steps is not None and args.budget_s is not None:
        p.error("give --steps or --budget-s, not both")
    if args.steps is None and args.budget_s is None:
        args.steps = 100
    if not args.specs and not args.rescore:
        p.error("no warm start: give --warm LABEL=DIR and/or --sft 'LABEL=sft.KEY=VALUE ...' (or --smoke)")
    labels = [s.label for s in args.specs]
    if len(set(labels)) != len(labels):
        p.error(f"warm-start labels must differ; got {labels}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    specs: list[WarmSpec] = args.specs
    try:
        load_config(args.config_name, args.overrides)
        for spec in specs:
            if spec.path is not None and not (spec.path / "config.json").is_file():
                raise ValueError(f"--warm {spec.label}={spec.path}: not a policy directory (no config.json)")
    except ValueError as err:  # ConfigError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    setup = Setup(args.config_name, args.overrides, args.steps, args.budget_s, args.eval_every, args.out,
                  args.timeout_s)  # fmt: skip
    earlier = args.out / "warm_starts.json"
    if args.rescore:
        return rescore(setup, earlier)
    if args.append and earlier.is_file():
        try:
            setup.results = kept_results(json.loads(earlier.read_text()), settings(setup), [s.label for s in specs])
        except ValueError as err:
            print(f"error: --append: {err}", file=sys.stderr)
            return 2
    for spec in specs:
        try:
            path, info = build_warm_start(setup, spec) if spec.sft is not None else (spec.path, {"reused": True})
            assert path is not None
            result = run_rl(setup, spec.label, path)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            write_report(setup, sys.argv[1:])
            return 1
        result["sft"] = describe_sft(path, info)
        setup.results.append(result)
        print(write_report(setup, sys.argv[1:]).splitlines()[-1])
    print(write_report(setup, sys.argv[1:]))
    print(f"[warm] wrote {args.out / 'warm_starts.json'} and {args.out / 'warm_starts.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
