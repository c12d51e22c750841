"""Peer benchmark: TRL's GRPOTrainer against ``python -m rlvr_ray.main``, from one warm start, side by side.

    python bench/peer_trl.py --warm-start outputs/warm_start --budget-s 900 --eval-every-s 60
    python bench/peer_trl.py --warm-start DIR --mode defaults-vs-best --trl-lr-grid 5e-5,2e-4
    python bench/peer_trl.py --smoke                       # tiny SFT policy (test config), 60 s per side

Needs the ``bench`` extra (``pip install -e '.[bench]'``: trl, datasets, accelerate). The two sides run one after
the other on the same box, each for ``--budget-s`` seconds of TRAIN time:

- TRL: GRPOTrainer in this process (CPU, ``--trl-threads`` torch threads). Prompts are the project's own prompt
  stream (``PromptSampler``, step s -> the same prompts the project trains on at step s), as text that the policy's
  saved word-level tokenizer encodes back to exactly the same ids. The reward function scores TRL's completion ids
  with the project's ``score_batch`` and reward type. A TrainerCallback evaluates at fixed train-time intervals
  while the train clock is paused, and stops training at the budget.
- rlvr_ray: ``python -m rlvr_ray.main model.init_dir=WARM training.time_budget_s=BUDGET ...`` in a subprocess. Its
  held-out evals (MLflow ``eval/accuracy_k*``) are placed on the train-time axis by the metric ``time/train_s``;
  when a run has no ``time/train_s`` the cumulative ``perf/step_s`` (the stage times of each step, which exclude
  eval, checkpoints and logging) is used instead, and the JSON says which.

Both sides use the same evaluator: ``rlvr_ray.eval.evaluate`` with the plain-torch engine, greedy, the config's
``eval`` section (complexities, n, seed) and ``training.max_generation_length`` tokens. Outputs under ``--out``:
``peer_trl.json`` (settings, machine, curves: train seconds -> per-complexity accuracy and mean k1-4),
``peer_trl.png`` (mean k1-4 accuracy against train seconds, both curves) and ``peer_trl_table.md`` (time to
0.7 / 0.8 / 0.85 mean k1-4 for each side and the ratio TRL / rlvr_ray).

Modes: ``matched`` (default) gives TRL the project config's settings (prompts per step, group size, mini-batch
geometry, temperature, top-p, max new tokens, learning rate, clip, KL, reward); ``defaults-vs-best`` runs the
project config unchanged against TRL with its own loss defaults (``TRL_BEST``) at the best learning rate of
``--trl-lr-grid`` (earliest to mean k1-4 >= 0.8, then highest final accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlvr_ray.config import RunConfig, TrainingConfig, load_config
from rlvr_ray.task.vocab import Vocab

THRESHOLDS = (0.7, 0.8, 0.85)
MEAN_KS = (1, 2, 3, 4)
REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------------------
# Curves, thresholds, table (pure)


@dataclass
class CurvePoint:
    """One held-out evaluation: train seconds so far, the optimizer/RL step, accuracy per complexity."""

    train_s: float
    step: int
    accuracy: dict[int, float]
    mean_k1_4: float
    eval_s: float = 0.0


def mean_k1_4(accuracy: Mapping[int, float]) -> float:
    """Mean accuracy over the complexities 1..4 that were evaluated; ValueError when none of them was."""
    values = [accuracy[k] for k in MEAN_KS if k in accuracy]
    if not values:
        raise ValueError(f"no accuracy for any of k={list(MEAN_KS)}; evaluated: {sorted(accuracy)}")
    return sum(values) / len(values)


def make_point(train_s: float, step: int, accuracy: Mapping[int, float], eval_s: float = 0.0) -> CurvePoint:
    acc = {int(k): float(v) for k, v in accuracy.items()}
    return CurvePoint(float(train_s), int(step), acc, mean_k1_4(acc), float(eval_s))


def time_to_threshold(curve: Sequence[CurvePoint], threshold: float) -> float | None:
    """Train seconds of the first evaluation whose mean k1-4 accuracy is >= ``threshold``; None if none is."""
    for point in sorted(curve, key=lambda p: p.train_s):
        if point.mean_k1_4 >= threshold:
            return point.train_s
    return None


def ratio_cell(trl_s: float | None, project_s: float | None, budget_s: float) -> str:
    """TRL time / rlvr_ray time; a bound when only one side got there within ``budget_s``."""
    if trl_s is not None and project_s is not None:
        return f"{trl_s / project_s:.2f}" if project_s > 0 else "inf"
    if project_s is not None:  # TRL did not reach it: it would need more than the budget
        return f">{budget_s / project_s:.2f}" if project_s > 0 else "inf"
    if trl_s is not None:
        return f"<{trl_s / budget_s:.2f}"
    return "n/a"


def threshold_rows(trl: Sequence[CurvePoint], project: Sequence[CurvePoint], budget_s: float) -> list[dict[str, Any]]:
    rows = []
    for threshold in THRESHOLDS:
        t_trl, t_project = time_to_threshold(trl, threshold), time_to_threshold(project, threshold)
        rows.append(
            {
                "threshold": threshold,
                "trl_s": t_trl,
                "project_s": t_project,
                "ratio": ratio_cell(t_trl, t_project, budget_s),
            }
        )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], budget_s: float) -> str:
    """Markdown table of time to each mean k1-4 threshold ('not reached' within the budget) and the ratio."""

    def cell(seconds: float | None) -> str:
        return f"{seconds:.0f}" if seconds is not None else f"not reached in {budget_s:.0f}"

    lines = [
        "| mean k1-4 accuracy | TRL GRPOTrainer (train s) | rlvr_ray (train s) | TRL / rlvr_ray |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| >= {row['threshold']:.2f} | {cell(row['trl_s'])} | {cell(row['project_s'])} | {row['ratio']} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The train clock and the interval evaluation schedule (pure; the TrainerCallback is a thin adapter)


class TrainClock:
    """Wall time since ``start`` minus the time spent inside ``paused()`` blocks."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self._started: float | None = None
        self._paused_total = 0.0
        self._paused_at: float | None = None

    def start(self) -> None:
        self._started, self._paused_total, self._paused_at = self.now(), 0.0, None

    def elapsed(self) -> float:
        if self._started is None:
            return 0.0
        end = self._paused_at if self._paused_at is not None else self.now()
        return end - self._started - self._paused_total

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._paused_at = self.now()
        try:
            yield
        finally:
            self._paused_total += self.now() - self._paused_at
            self._paused_at = None


def next_due(train_s: float, every_s: float) -> float:
    """The first multiple of ``every_s`` strictly after ``train_s`` (missed slots are skipped, not caught up)."""
    return (math.floor(train_s / every_s) + 1) * every_s


class IntervalSchedule:
    """Evaluates at train time 0, every ``every_s`` train seconds, and once more when the budget is spent."""

    def __init__(
        self, clock: TrainClock, evaluate: Callable[[Any], Mapping[int, float]], every_s: float, budget_s: float
    ) -> None:
        if every_s <= 0 or budget_s <= 0:
            raise ValueError(f"eval interval and budget must be > 0 s, got {every_s} and {budget_s}")
        self.clock, self.evaluate, self.every_s, self.budget_s = clock, evaluate, every_s, budget_s
        self.curve: list[CurvePoint] = []
        self.due = every_s

    def begin(self, model: Any) -> None:
        self.record(model, step=0, train_s=0.0)
        self.clock.start()

    def after_step(self, model: Any, step: int) -> bool:
        """Evaluate when due; True once the budget is spent (the caller stops training)."""
        train_s = self.clock.elapsed()
        done = train_s >= self.budget_s
        if done or train_s >= self.due:
            self.record(model, step, train_s)
            self.due = next_due(train_s, self.every_s)
        return done

    def record(self, model: Any, step: int, train_s: float) -> None:
        with self.clock.paused():
            started = self.clock.now()
            accuracy = self.evaluate(model)
            self.curve.append(make_point(train_s, step, accuracy, self.clock.now() - started))
        print(f"[peer] eval at {train_s:.0f} train s (step {step}): mean k1-4 {self.curve[-1].mean_k1_4:.3f}")


# ----------------------------------------------------------------------------------------------------------------
# Settings: the project config mirrored onto GRPOTrainer


LOSS_TYPES = {"seq_mean_token_mean": "grpo", "token_mean": "dapo", "seq_mean_token_sum_norm": "dr_grpo"}
"""Project loss aggregation -> TRL ``loss_type`` with the same aggregation."""
REWARD_SCALING = {"grpo": "group", "dr_grpo": "none"}
"""Project advantage estimator -> TRL ``scale_rewards`` (group std normalisation or none)."""
TRL_BEST: dict[str, Any] = {"loss_type": "dapo", "scale_rewards": "group"}
"""TRL's own defaults for the loss, used by ``--mode defaults-vs-best`` (the learning rate comes from a grid)."""


@dataclass(frozen=True)
class TrlSettings:
    """What GRPOTrainer is told; one RL step = ``prompts_per_step x group_size`` completions, split into
    optimizer steps of ``mini_batch_size`` completions (each in ``grad_accum`` micro-batches), like the project."""

    prompts_per_step: int
    group_size: int
    mini_batch_size: int
    grad_accum: int
    temperature: float
    top_p: float
    max_new_tokens: int
    learning_rate: float
    reward_type: str
    boxed_weight: float
    correct_weight: float
    loss_type: str
    scale_rewards: str
    epsilon: float
    epsilon_high: float | None
    beta: float
    num_iterations: int
    max_grad_norm: float
    entropy_coef: float
    seed: int

    @property
    def batch_size(self) -> int:
        return self.prompts_per_step * self.group_size


def trl_settings(t: TrainingConfig) -> TrlSettings:
    """The project's RL settings as GRPOTrainer settings; ValueError when TRL has no equivalent."""
    from rlvr_ray.algo.presets import resolve_preset

    preset = resolve_preset(t.algorithm, t.loss_agg_mode, t.cliprange_high)
    if preset.advantage not in REWARD_SCALING or preset.loss_agg_mode not in LOSS_TYPES:
        raise ValueError(
            f"training.algorithm {t.algorithm!r} has no GRPOTrainer equivalent; allowed: grpo, dr_grpo, dapo"
        )
    if t.kl_coef > 0 and (t.kl_estimator != "k3" or t.kl_in_reward):
        raise ValueError("training.kl_coef > 0 matches TRL only with kl_estimator=k3 and kl_in_reward=false")
    return TrlSettings(
        prompts_per_step=t.prompts_per_step,
        group_size=t.group_size,
        mini_batch_size=t.mini_batch_size,
        grad_accum=t.gradient_accumulation_steps,
        temperature=t.temperature,
        top_p=t.top_p,
        max_new_tokens=t.max_generation_length,
        learning_rate=t.learning_rate,
        reward_type=t.reward_type,
        boxed_weight=t.boxed_weight,
        correct_weight=t.correct_weight,
        loss_type=LOSS_TYPES[preset.loss_agg_mode],
        scale_rewards=REWARD_SCALING[preset.advantage],
        epsilon=t.cliprange,
        epsilon_high=preset.clip_high,
        beta=t.kl_coef,
        num_iterations=t.ppo_epochs,
        max_grad_norm=t.max_grad_norm,
        entropy_coef=t.entropy_coef,
        seed=t.seed,
    )


def apply_overrides(settings: TrlSettings, overrides: Sequence[str] | Mapping[str, Any]) -> TrlSettings:
    """``["learning_rate=5e-5", ...]`` (YAML values) or a mapping applied to the settings; ValueError names a bad
    key and lists the allowed ones."""
    types = {f.name: str(f.type) for f in dataclasses.fields(TrlSettings)}
    pairs: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, Mapping) else [_split_override(o) for o in overrides]
    for key, value in items:
        if key not in types:
            raise ValueError(f"TRL setting {key!r} unknown; allowed: {', '.join(sorted(types))}")
        try:
            pairs[key] = _CONVERT[types[key]](value)
        except (TypeError, ValueError):
            raise ValueError(f"TRL setting {key}={value!r}: expected {types[key]}") from None
    return dataclasses.replace(settings, **pairs)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": str, "float | None": _optional_float}
"""TrlSettings field type (as annotated) -> converter of an override value (YAML reads 5e-5 as a string)."""


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like name=value (e.g. learning_rate=5e-5)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


# ----------------------------------------------------------------------------------------------------------------
# Prompts and reward for TRL


def prompt_text(prompt_ids: Sequence[int], vocab: Vocab) -> str:
    """A prompt as the text the policy's word-level tokenizer encodes back to exactly ``prompt_ids``."""
    return vocab.decode(list(prompt_ids))


def load_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer saved with a policy (word-level; adds no special tokens; left padding)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    return tokenizer


def prompt_rows(vocab: Vocab, t: TrainingConfig, prompts_per_step: int, steps: int) -> list[dict[str, Any]]:
    """The project's training prompts for RL steps 0..steps-1, in order, as dataset rows (prompt text, answer)."""
    from rlvr_ray.task.prompts import PromptSampler

    sampler = PromptSampler(vocab, t.complexity_range, prompts_per_step, t.seed, t.max_prompt_length)
    rows = []
    for step in range(steps):
        batch = sampler.sample(step)
        for ids, answer, k in zip(batch.prompt_ids, batch.answers, batch.complexities, strict=True):
            rows.append({"prompt": prompt_text(ids, vocab), "answer": int(answer), "complexity": int(k)})
    return rows


def make_reward_fn(vocab: Vocab, settings: TrlSettings) -> Callable[..., list[float]]:
    """A GRPOTrainer reward function: the project's ``score_batch`` reward of each completion's token ids."""
    from rlvr_ray.verify.rewards import score_batch

    def reward(prompts: list[str], completion_ids: list[list[int]], answer: list[int], **_: Any) -> list[float]:
        prompt_ids = [vocab.encode(p) for p in prompts]
        scores = score_batch(
            prompt_ids,
            [list(c) for c in completion_ids],
            answer,
            vocab,
            settings.reward_type,
            settings.boxed_weight,
            settings.correct_weight,
        )
        return [float(r) for r in scores.reward]

    reward.__name__ = f"rlvr_{settings.reward_type}"
    return reward


# ----------------------------------------------------------------------------------------------------------------
# The TRL side


@dataclass
class SideResult:
    """One side's run: its curve, step count, train and wall seconds, and how its time axis was measured."""

    name: str
    curve: list[CurvePoint]
    steps: int
    train_s: float
    wall_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def held_out_evaluator(warm_dir: Path, cfg: RunConfig) -> Callable[[Any], dict[int, float]]:
    """``model -> {k: accuracy}``: the model's current weights copied into a torch engine, then the project's own
    held-out evaluation of a run (``rlvr_ray.eval.evaluate_run``: ``cfg.eval``, greedy)."""
    import torch

    from rlvr_ray.eval import evaluate_run
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.rollout.torch_engine import TorchEngine

    vocab = load_vocab(warm_dir)
    engine = TorchEngine(str(warm_dir))

    def run(model: Any) -> dict[int, float]:
        with torch.no_grad():
            engine.load_weights({name: t.detach() for name, t in model.state_dict().items()})
        return {r.complexity: r.accuracy for r in evaluate_run(engine.generate, vocab, cfg)}

    return run


def grpo_config(s: TrlSettings, out_dir: Path, max_steps: int) -> Any:
    """GRPOConfig (TRL 1.16 names): CPU, fp32, constant lr, no warm-up or decay, no checkpoints, no logging sinks."""
    from trl import GRPOConfig

    if s.mini_batch_size % s.grad_accum or s.batch_size % s.mini_batch_size:
        raise ValueError(f"batch {s.batch_size} / mini-batch {s.mini_batch_size} / grad_accum {s.grad_accum} uneven")
    return GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=s.max_grad_norm,
        per_device_train_batch_size=s.mini_batch_size // s.grad_accum,
        gradient_accumulation_steps=s.grad_accum,
        generation_batch_size=s.batch_size,
        num_generations=s.group_size,
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0,
        beta=s.beta,
        num_iterations=s.num_iterations,
        epsilon=s.epsilon,
        epsilon_high=s.epsilon_high,
        loss_type=s.loss_type,
        scale_rewards=s.scale_rewards,
        entropy_coef=s.entropy_coef,
        shuffle_dataset=False,  # step s trains on the project's step-s prompts
        max_steps=max_steps,
        seed=s.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run_trl(
    warm: Path, cfg: RunConfig, s: TrlSettings, budget_s: float, every_s: float, work: Path, threads: int
) -> SideResult:
    """GRPOTrainer from ``warm`` for ``budget_s`` train seconds, evaluated every ``every_s`` train seconds."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from rlvr_ray.policy import load_policy, load_vocab

    torch.set_num_threads(threads)
    vocab = load_vocab(warm)
    rl_steps = max(10, math.ceil(budget_s / 0.25))  # prompts for one RL step per 0.25 s; more cycle over them
    rows = prompt_rows(vocab, cfg.training, s.prompts_per_step, rl_steps)
    optimizer_steps_per_rl_step = s.batch_size // s.mini_batch_size * s.num_iterations
    schedule = IntervalSchedule(TrainClock(), held_out_evaluator(warm, cfg), every_s, budget_s)

    class IntervalEval(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            schedule.begin(model)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            if schedule.after_step(model, state.global_step):
                control.should_training_stop = True

    trainer = GRPOTrainer(
        model=load_policy(warm),
        reward_funcs=[make_reward_fn(vocab, s)],
        args=grpo_config(s, work / "trl", max_steps=10**7),
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(warm),
        callbacks=[IntervalEval()],
    )
    started = time.perf_counter()
    trainer.train()
    optimizer_steps = trainer.state.global_step
    rl_done = optimizer_steps / optimizer_steps_per_rl_step
    train_s = schedule.curve[-1].train_s  # the clock at the step that spent the budget
    notes = [
        f"{optimizer_steps} optimizer steps, {optimizer_steps_per_rl_step} per RL step of {s.batch_size} completions",
        f"{train_s / max(rl_done, 1e-9):.2f} train s per RL step",
        f"{threads} torch thread(s), one process",
        load_note(),
    ]
    if optimizer_steps > rl_steps * optimizer_steps_per_rl_step:
        notes.append(f"prompt stream of {rl_steps} RL steps was cycled")
    wall_s = time.perf_counter() - started
    return SideResult("trl", schedule.curve, int(rl_done), train_s, wall_s, asdict(s), notes)


# ----------------------------------------------------------------------------------------------------------------
# The rlvr_ray side


def project_command(
    config_name: str,
    overrides: Sequence[str],
    warm: Path,
    out: Path,
    tracking_uri: str,
    budget_s: float,
    eval_every: int,
    checkpoint_every: int,
) -> list[str]:
    """``python -m rlvr_ray.main`` for a fresh run from ``warm`` that stops on the time budget, not a step count.

    Checkpoints at most as often as evaluations: neither counts as train time, but each costs wall time."""
    return [
        sys.executable, "-m", "rlvr_ray.main", "--config-name", config_name, *overrides,
        f"model.init_dir={warm}", f"output_dir={out}", "resume=false", f"tracking.tracking_uri={tracking_uri}",
        f"training.time_budget_s={budget_s}", f"training.eval_every={eval_every}",
        f"training.checkpoint_every={max(checkpoint_every, eval_every)}",
        "training.ppo_steps=1000000", "training.samples_per_epoch=1000000000",
    ]  # fmt: skip


def cumulative(values: Mapping[int, float]) -> dict[int, float]:
    """step -> running sum over the steps in order."""
    total, out = 0.0, {}
    for step in sorted(values):
        total += values[step]
        out[step] = total
    return out


def project_curve(
    histories: Mapping[str, Mapping[int, float]],
    complexities: Sequence[int],
    before: Mapping[int, float] | None = None,
    after: Mapping[int, float] | None = None,
) -> tuple[list[CurvePoint], str]:
    """The project's curve from its MLflow histories (key -> {step: value}); returns it and the time source.

    Time axis: ``time/train_s`` when logged, else the cumulative ``perf/step_s``. ``before`` (the warm start's
    table) is placed at 0 s, ``after`` (the final policy's) at the last step's train time.
    """
    if histories.get("time/train_s"):
        times, source = dict(histories["time/train_s"]), "time/train_s"
    elif histories.get("perf/step_s"):
        times, source = cumulative(histories["perf/step_s"]), "cumulative perf/step_s (no time/train_s logged)"
    else:
        raise ValueError("the run logged neither time/train_s nor perf/step_s: no time axis")
    keys = [f"eval/accuracy_k{k}" for k in complexities]
    eval_steps = sorted(set.intersection(*(set(histories.get(key, {})) for key in keys)))
    curve = [make_point(0.0, 0, before)] if before else []
    for step in eval_steps:
        if step in times:
            curve.append(
                make_point(
                    times[step], step + 1, {k: histories[key][step] for k, key in zip(complexities, keys, strict=True)}
                )
            )
    if after and times:
        last = max(times)
        if not curve or curve[-1].step != last + 1:
            curve.append(make_point(times[last], last + 1, after))
    return curve, source


def read_histories(tracking_uri: str, run_id: str, keys: Sequence[str]) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in keys}


def run_subprocess(cmd: Sequence[str], log: Path, timeout_s: float) -> int:
    """Run ``cmd`` in its own process group with output to ``log``; past ``timeout_s`` interrupt (then kill) that
    group. Returns the exit code."""
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"[peer] {cmd[2]} still running after {timeout_s:.0f} s: interrupting it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                return proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait()


def load_rows(path: Path) -> dict[int, float] | None:
    """{k: accuracy} of an eval table the project wrote: a list of rows, or ``{"key": ..., "rows": [...]}``."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    return {int(r["complexity"]): float(r["accuracy"]) for r in rows}


def run_project(
    config_name: str,
    overrides: Sequence[str],
    warm: Path,
    cfg: RunConfig,
    budget_s: float,
    eval_every: int,
    work: Path,
    timeout_s: float,
) -> SideResult:
    """``rlvr_ray.main`` in a subprocess; its curve read back from its MLflow run and eval tables."""
    from rlvr_ray.tracking import RUN_ID_FILE

    out = work / "project"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run every time (a previous benchmark's run is not resumed)
    uri = f"sqlite:///{(work / 'project_mlflow.db').resolve()}"
    cmd = project_command(
        config_name, overrides, warm.resolve(), out.resolve(), uri, budget_s, eval_every, cfg.training.checkpoint_every
    )
    print("[peer] " + " ".join(cmd))
    started = time.perf_counter()
    rc = run_subprocess(cmd, work / "project.log", timeout_s)
    wall_s = time.perf_counter() - started
    if not (out / RUN_ID_FILE).is_file():
        raise RuntimeError(f"rlvr_ray.main exited {rc} before creating its MLflow run; see {work / 'project.log'}")
    run_id = (out / RUN_ID_FILE).read_text().strip()
    ks = list(cfg.eval.complexities)
    histories = read_histories(uri, run_id, [f"eval/accuracy_k{k}" for k in ks] + ["time/train_s", "perf/step_s"])
    curve, source = project_curve(
        histories, ks, load_rows(out / "eval_before.json"), load_rows(out / "eval_after.json")
    )
    steps = len(histories["perf/step_s"])
    train_s = curve[-1].train_s if curve else 0.0
    notes = [
        f"time axis: {source}",
        f"{train_s / max(steps, 1):.2f} train s per RL step",
        f"exit code {rc}",
        f"held-out eval every {eval_every} steps",
        f"log: {work / 'project.log'}",
        f"mlflow: {uri} run {run_id}",
        load_note(),
    ]
    t = cfg.training
    settings = {"config_name": config_name, "overrides": list(overrides), **t.model_dump(mode="json")}
    return SideResult("project", curve, steps, train_s, wall_s, settings, notes)


# ----------------------------------------------------------------------------------------------------------------
# Report


def load_note() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return "load average 1/5/15 min at the end: " + " ".join(f"{x:.2f}" for x in load)


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor(), "loadavg_1_5_15": list(load)}  # fmt: skip


def plot(trl: SideResult, project: SideResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side, label in ((trl, "TRL GRPOTrainer"), (project, "rlvr_ray")):
        marker = "o" if len(side.curve) <= 40 else None
        ax.plot([p.train_s for p in side.curve], [p.mean_k1_4 for p in side.curve], marker=marker, label=label)
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("train seconds (held-out eval excluded)")
    ax.set_ylabel("held-out greedy accuracy, mean k1-4")  # (over those of k1-4 that were evaluated)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out: Path, args: argparse.Namespace, trl: SideResult, project: SideResult, extra: Mapping[str, Any]
) -> str:
    """Write peer_trl.json / .png / _table.md under ``out``; returns the table."""
    rows = threshold_rows(trl.curve, project.curve, args.budget_s)
    table = format_table(rows, args.budget_s)
    report = {
        "mode": args.mode, "warm_start": str(args.warm_start), "budget_s": args.budget_s,
        "eval_every_s": args.eval_every_s, "machine": machine_info(), "time_to_threshold": rows,
        "trl": asdict(trl), "project": asdict(project), **extra,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_trl.json").write_text(json.dumps(report, indent=2))
    (out / "peer_trl_table.md").write_text(table + "\n")
    plot(trl, project, out / "peer_trl.png")
    return table


# ----------------------------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-start", type=Path, help="HF policy directory written by rlvr_ray (SFT or a run)")
    p.add_argument("--config-name", default="train_rlvr_model", help="the project config both sides mirror")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override (both sides)")
    p.add_argument("--trl-set", action="append", default=[], help="TRL-only setting, e.g. learning_rate=5e-5")
    p.add_argument("--mode", choices=("matched", "defaults-vs-best"), default="matched")
    p.add_argument("--trl-lr-grid", default="5e-5,2e-4", help="defaults-vs-best: TRL learning rates to try")
    p.add_argument("--budget-s", type=float, default=900.0, help="train seconds per side")
    p.add_argument("--eval-every-s", type=float, default=60.0, help="TRL: train seconds between held-out evals")
    p.add_argument("--project-eval-every", type=int, default=None, help="project: steps between evals")
    p.add_argument(
        "--project-step-s",
        type=float,
        default=3.0,
        help="expected project step time; sets --project-eval-every when that is not given",
    )
    p.add_argument("--project-timeout-s", type=float, default=None, help="kill the project run after this")
    p.add_argument("--eval-complexities", default=None, help="e.g. 1-6: held-out complexities of both sides")
    p.add_argument("--trl-threads", type=int, default=1)
    p.add_argument("--sides", default="trl,project", help="run only some sides (trl,project)")
    p.add_argument("--out", type=Path, default=Path("outputs/peer_trl"))
    p.add_argument("--smoke", action="store_true", help="tiny SFT policy from the test config, 60 s per side")
    args = p.parse_args(argv)
    if args.smoke:
        args.config_name, args.budget_s, args.eval_every_s = "train_rlvr_test", 60.0, 20.0
        args.project_step_s = 0.1  # the test config's tiny policy (measured 0.09 train s per step)
        args.project_timeout_s = args.project_timeout_s or 420.0
        args.out = args.out if args.out != Path("outputs/peer_trl") else Path("outputs/peer_trl_smoke")
    elif args.warm_start is None:
        p.error("--warm-start is required (or --smoke)")
    if args.eval_complexities:
        from rlvr_ray.eval import parse_complexities

        try:
            args.overrides.append(f"eval.complexities={parse_complexities(args.eval_complexities)}")
        except ValueError as err:
            p.error(str(err))
    if args.project_eval_every is None:
        args.project_eval_every = max(1, round(args.eval_every_s / args.project_step_s))
    args.project_timeout_s = args.project_timeout_s or args.budget_s * 2 + 600
    return args


def smoke_warm_start(work: Path) -> Path:
    """A tiny policy by the project's SFT with the test config (made once under ``work``)."""
    warm = work / "warm_smoke"
    if not (warm / "model.safetensors").is_file():
        cmd = [sys.executable, "-m", "rlvr_ray.sft", "--config-name", "train_rlvr_test", "--out", str(warm)]
        if run_subprocess(cmd, work / "sft.log", 900) != 0:
            raise RuntimeError(f"SFT of the smoke warm start failed; see {work / 'sft.log'}")
    return warm


def best_trl(runs: Sequence[SideResult]) -> SideResult:
    """Earliest to mean k1-4 >= 0.8; ties (or none reached) broken by the highest final mean k1-4."""

    def key(run: SideResult) -> tuple[float, float]:
        reached = time_to_threshold(run.curve, 0.8)
        return (reached if reached is not None else math.inf, -(run.curve[-1].mean_k1_4 if run.curve else 0.0))

    return min(runs, key=key)


def run_trl_side(args: argparse.Namespace, cfg: RunConfig, warm: Path) -> tuple[SideResult, dict[str, Any]]:
    base = trl_settings(cfg.training)
    if args.mode == "matched":
        settings = apply_overrides(base, args.trl_set)
        return run_trl(warm, cfg, settings, args.budget_s, args.eval_every_s, args.out, args.trl_threads), {}
    runs = []
    for lr in (float(x) for x in args.trl_lr_grid.split(",")):
        settings = apply_overrides(apply_overrides(base, {**TRL_BEST, "learning_rate": lr}), args.trl_set)
        runs.append(
            run_trl(warm, cfg, settings, args.budget_s, args.eval_every_s, args.out / f"lr{lr:g}", args.trl_threads)
        )
    best = best_trl(runs)
    return best, {"trl_grid": [asdict(r) for r in runs]}


def check_inputs(args: argparse.Namespace) -> RunConfig:
    """The config both sides follow; ValueError (one line) for a bad config, setting, side or warm start."""
    cfg = load_config(args.config_name, args.overrides)
    apply_overrides(trl_settings(cfg.training), args.trl_set)
    bad_sides = set(args.sides.split(",")) - {"trl", "project"}
    if bad_sides:
        raise ValueError(f"--sides {args.sides!r}: allowed: trl, project (comma-separated)")
    if not args.smoke and not (Path(args.warm_start) / "config.json").is_file():
        raise ValueError(f"--warm-start {args.warm_start}: not a policy directory (no config.json)")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = check_inputs(args)
    except ValueError as err:  # ConfigError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.warm_start = smoke_warm_start(args.out) if args.smoke else args.warm_start
    sides, skipped = args.sides.split(","), SideResult("skipped", [], 0, 0.0, 0.0)
    trl, extra = run_trl_side(args, cfg, args.warm_start) if "trl" in sides else (skipped, {})
    project = skipped
    if "project" in sides:
        write_report(args.out, args, trl, skipped, extra)  # TRL's half survives a failed project run
        try:
            project = run_project(args.config_name, args.overrides, args.warm_start, cfg, args.budget_s,
                                  args.project_eval_every, args.out, args.project_timeout_s)  # fmt: skip
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    table = write_report(args.out, args, trl, project, extra)
    print(table)
    print(f"[peer] wrote {args.out / 'peer_trl.json'}, {args.out / 'peer_trl.png'}, {args.out / 'peer_trl_table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
