"""The controller: the only module that knows the order of the stages.

    sample prompts -> rollout -> verify -> advantages + update -> weight sync -> log / eval / checkpoint

With ``training.max_staleness = k > 0`` the rollouts of the next ``k`` steps are submitted before the update, so the
rollout actors generate while the learner trains (see :mod:`rlvr_ray.rollout.pipeline`); ``k = 0`` is the
synchronous loop. It runs on learner rank 0 inside the Ray Train worker group; other ranks run :func:`follow`,
which mirrors the collective calls (the batch broadcast inside ``update`` and the Ray Train reports) on the same
schedule, told by rank 0 which step is the last.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rlvr_ray.config import RunConfig
from rlvr_ray.eval import evaluate_run, rows_to_metrics
from rlvr_ray.guard import (
    HELDOUT_GUARD,
    TIME_BUDGET,
    HeldOut,
    better,
    budget_spent,
    check_heldout,
    guard_line,
    reason_holds,
    watched,
)
from rlvr_ray.learner.checkpoint import LoopState, report_step
from rlvr_ray.learner.worker import LearnerRank, build_learner_rank
from rlvr_ray.rollout.pipeline import RolloutBuffer, staleness_of
from rlvr_ray.sync.push import make_weight_push
from rlvr_ray.task.prompts import PromptSampler
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.tracking import reduce_window
from rlvr_ray.types import Completion, PromptBatch, RolloutBatch, SamplingSpec, ScoredBatch


def is_eval_step(cfg: RunConfig, step: int, last: bool = False) -> bool:
    return last or (step + 1) % cfg.training.eval_every == 0 or step + 1 == cfg.training.total_steps


def is_checkpoint_step(cfg: RunConfig, step: int, last: bool = False) -> bool:
    return last or (step + 1) % cfg.training.checkpoint_every == 0 or step + 1 == cfg.training.total_steps


def is_log_step(cfg: RunConfig, step: int, last: bool = False) -> bool:
    """Every ``training.log_every`` steps, and every step that evaluates or checkpoints (its report carries them)."""
    t = cfg.training
    return (step + 1) % t.log_every == 0 or is_eval_step(cfg, step, last) or is_checkpoint_step(cfg, step, last)


class Timer:
    """Wall time per stage of one step, as ``perf/<stage>_s`` metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[f"perf/{stage}_s"] = time.perf_counter() - start
        return result


class TrainClock:
    """RL wall time with held-out eval and checkpointing left out; carried across resumes."""

    def __init__(self, already: float) -> None:
        self.already, self.started, self.paused_s = already, time.monotonic(), 0.0

    def total(self) -> float:
        return self.already + time.monotonic() - self.started - self.paused_s

    def pause(self, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.paused_s += time.monotonic() - start


class Progress:
    """One plain log line at most every ``every_s`` seconds (and on the last step): readable in a terminal and in
    ``ray job logs``, where a redrawn bar turns into a line per update. Logged, not printed: Ray Train workers
    echo their stdout and stderr twice to the driver, their log records once."""

    def __init__(self, total: int, every_s: float = 15.0) -> None:
        self.total, self.every_s, self.last_print = total, every_s, float("-inf")
        self.log = logging.getLogger("rlvr_ray.progress")
        self.log.setLevel(logging.INFO)

    def update(self, step: int, metrics: dict[str, float], last: bool) -> None:
        now = time.monotonic()
        if not last and now - self.last_print < self.every_s:
            return
        self.last_print = now
        eval_part = f" held-out {metrics['eval/accuracy']:.3f}" if "eval/accuracy" in metrics else ""
        self.log.info(
            f"[rl] step {step + 1}/{self.total} reward {metrics['reward/mean']:.3f} "
            f"train acc {metrics['train/accuracy']:.3f}{eval_part} {metrics['perf/step_s']:.2f} s/step "
            f"staleness {metrics['async/staleness_mean']:.1f} train time {metrics['time/train_s']:.0f} s"
        )


class Controller:
    """Drives the RL loop on rank 0. Each collaborator got only its own config section when it was built."""

    def __init__(
        self,
        cfg: RunConfig,
        vocab: Vocab,
        learner: LearnerRank,
        rollout_group: Any,
        verifier_pool: Any,
        tracker: Any,
        baseline: list[tuple[int, float, int]] | None = None,
    ) -> None:
        self.cfg, self.vocab, self.learner = cfg, vocab, learner
        # The starting policy's held-out eval rows (complexity, accuracy, n): the first point the guard can fall from.
        self.baseline = watched(baseline, cfg.training.complexity_range) if baseline else None
        self.rollout, self.verifier, self.tracker = rollout_group, verifier_pool, tracker
        self.push_weights = make_weight_push(cfg.sync, rollout_group)
        self.state_on_cpu = cfg.sync.backend == "object_store"  # NCCL broadcasts straight from the GPU
        t = cfg.training
        self.sampler = PromptSampler(self.vocab, t.complexity_range, t.prompts_per_step, t.seed, t.max_prompt_length)
        sampling = SamplingSpec(
            n=t.group_size,
            temperature=t.temperature,
            top_p=t.top_p,
            max_tokens=t.max_generation_length,
            stop_token_id=self.vocab.eoe,
            seed=t.seed,
        )
        self.last_eval: dict[str, float] = {}
        self.unlogged: list[dict[str, float]] = []  # metrics of the steps since the last log
        self.buffer = RolloutBuffer(
            rollout_group, self.sampler.sample, sampling, t.max_staleness, prescore=verifier_pool.prescore
        )

    def run(self, state: LoopState) -> None:
        total, budget = self.cfg.training.total_steps, self.cfg.training.time_budget_s
        if already_stopped(self.cfg, state):
            return
        if state.step > 0:
            state.restarts += 1
        self.push_weights(self.learner.policy_state(self.state_on_cpu), state.step)  # engines may hold other weights
        self.buffer.restore(state.inflight)
        clock, progress = TrainClock(state.train_seconds), Progress(total)
        for step in range(state.step, total):
            reason = TIME_BUDGET if budget_spent(budget, clock.total()) else state.stop_reason  # (a guard's pending)
            last = step + 1 == total or reason is not None
            metrics = self.step(step, last, state)
            state.step, state.train_seconds = step + 1, clock.total()
            if reason is not None:
                state.stop_reason, state.stopped = reason, True
            metrics.update({"time/train_s": state.train_seconds, "recovery/learner_restarts": float(state.restarts)})
            clock.pause(functools.partial(self.after_step, step, metrics, last, state))
            progress.update(step, metrics, last)
            if last:
                break

    def step(self, step: int, last: bool, state: LoopState) -> dict[str, float]:
        """One RL step (the learner's weights are version ``step``); returns its metrics."""
        timer, last_step, ahead = Timer(), self.cfg.training.total_steps - 1, self.submits_ahead(step, last)
        timer.run("submit", self.buffer.fill, step, last_step)  # 1. prompts + 2. rollout
        rollouts, prescored = timer.run("wait_rollout", self.buffer.take, step, step)
        scored: ScoredBatch = timer.run("verify", self.verifier.score, rollouts, prescored)  # 3. verify (streamed)
        stats, _ = timer.run("update", self.learner.update, scored, step, last)  # 4. advantages + loss, 5. update
        if ahead:  # sampled while the engines still generate, so submitting after the sync is quick
            timer.run("sample_ahead", self.buffer.prepare, step + 1, last_step)
        timer.run("sync", self.push_weights, self.learner.policy_state(self.state_on_cpu), step + 1)  # 6. sync
        # The version the engines report, asked before a generation queued ahead would make the answer wait for it.
        engine_version = min(timer.run("sync_check", self.rollout.versions))
        if ahead:  # the engines go on at once, while this step is logged
            timer.run("submit_ahead", self.buffer.fill, step + 1, last_step)
        state.ledger.append(ledger_record(step, rollouts))
        staleness, seconds = staleness_of(rollouts, step), timer.seconds
        return {
            **batch_metrics(scored, rollouts.num_generated_tokens, seconds),
            **stats,
            # What each stage waits on: the learner on rollouts, verification and the engines taking the weights
            # (which includes finishing a generation in flight); the engines on everything else.
            "async/learner_wait_s": seconds["perf/wait_rollout_s"] + seconds["perf/verify_s"] + seconds["perf/sync_s"],
            "async/rollout_idle_s": max(0.0, sum(seconds.values()) - rollouts.generate_seconds),
            "async/staleness_mean": float(staleness.mean()),
            "async/staleness_max": float(staleness.max()),
            "async/refused_batches": float(self.buffer.refused),
            "recovery/rollout_respawns": float(self.rollout.respawns),
            "sync/engine_version": float(engine_version),
        }

    def submits_ahead(self, step: int, last: bool) -> bool:
        """Whether the next step's generations are submitted as soon as this step's weights are in, rather than
        when the next step starts. Only when pipelined (``max_staleness > 0``; the synchronous loop stays call for
        call) and only after a plain step: a held-out eval or a checkpoint runs off the train clock, and a
        generation queued before it would run unclocked. The samples are the same either way: the generation is
        queued behind the same weight version."""
        plain = not (last or is_eval_step(self.cfg, step) or is_checkpoint_step(self.cfg, step))
        return self.cfg.training.max_staleness > 0 and plain

    def after_step(self, step: int, metrics: dict[str, float], last: bool, state: LoopState) -> None:
        """Held-out eval, logging, checkpoint and Ray Train report of a finished step (off the train clock).

        A logged step logs the steps since the last log, reduced (:func:`rlvr_ray.tracking.reduce_window`: means,
        maxima, event counts summed, running totals as they stand), so a step that is not logged
        (``training.log_every``) loses nothing. Eval and checkpoint steps always log, so a resumed run starts with
        nothing unlogged."""
        evaluate_now, save = is_eval_step(self.cfg, step, last), is_checkpoint_step(self.cfg, step, last)
        if evaluate_now:
            rows = evaluate_run(self.engine_generate, self.vocab, self.cfg)
            self.last_eval = rows_to_metrics(rows)
            metrics.update(self.last_eval)
            now = watched(((r.complexity, r.accuracy, r.n) for r in rows), self.cfg.training.complexity_range)
            metrics.update(self.guard(step, now, last, state))
            state.best_eval_accuracy = max(state.best_eval_accuracy, metrics["eval/accuracy"])
        self.unlogged.append(metrics)
        if is_log_step(self.cfg, step, last):
            self.tracker.log_metrics(reduce_window(self.unlogged), step)
            self.unlogged = []
        if save:
            state.inflight = self.buffer.snapshot()
        if evaluate_now or save:  # every report carries the latest held-out metrics (Tune reads them from each)
            report_step(self.cfg, self.learner, self.vocab, state, {**self.last_eval, **metrics}, save)

    def guard(self, step: int, now: HeldOut, last: bool, state: LoopState) -> dict[str, float]:
        """The held-out guard (:mod:`rlvr_ray.guard`) on the eval after ``step``; returns its metrics.

        Held-out evals are generated by the running engines, so the guard also sees a broken weight sync."""
        t = self.cfg.training
        best = HeldOut.from_json(state.guard_best) if state.guard_best else self.baseline
        check = check_heldout(best, now, t.heldout_guard_z)
        if check.tripped and best is not None and t.heldout_guard_z is not None:
            state.guard_trips += 1
            logging.getLogger("rlvr_ray.guard").warning(
                guard_line(step, check, best, now, t.heldout_guard_z, t.heldout_guard_action)
            )
            if t.heldout_guard_action == "stop" and not last:
                state.stop_reason = HELDOUT_GUARD  # the next step is the last
        state.guard_best = better(best, now).to_json()
        trips = float(state.guard_trips)
        return {"guard/heldout_drop": check.drop, "guard/heldout_drop_z": check.z, "guard/trips": trips}

    def engine_generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        batch = PromptBatch(prompts, np.zeros(len(prompts), np.int64), np.zeros(len(prompts), np.int64))
        out = self.rollout.generate(batch, spec)
        return [
            Completion(int(g), c, lp) for g, c, lp in zip(out.group_ids, out.completion_ids, out.logprobs, strict=True)
        ]


def already_stopped(cfg: RunConfig, state: LoopState) -> bool:
    """Whether a run that stopped early (:mod:`rlvr_ray.guard`) is finished under the current settings; a stop
    whose reason no longer holds (budget raised, guard set to warn) is cleared and the run carries on. Every rank
    decides the same from the same checkpoint."""
    t = cfg.training
    if state.stop_reason and not reason_holds(
        state.stop_reason, t.time_budget_s, state.train_seconds, t.heldout_guard_action
    ):
        state.stop_reason, state.stopped = None, False
    return state.stopped


def follow(cfg: RunConfig, learner: LearnerRank, state: LoopState) -> None:
    """Ranks > 0: train on each broadcast batch and join rank 0's Ray Train reports on the same steps."""
    if already_stopped(cfg, state):
        return
    for step in range(state.step, cfg.training.total_steps):
        _, last = learner.update(None)
        state.step = step + 1
        save = is_checkpoint_step(cfg, step, last)
        if is_eval_step(cfg, step, last) or save:
            report_step(cfg, learner, None, state, {}, save)
        if last:
            break


def ledger_record(step: int, rollouts: RolloutBatch) -> dict[str, Any]:
    """What step ``step`` trained on: digests of its prompts (with answers) and of its samples, their versions."""
    prompts, samples = hashlib.sha256(), hashlib.sha256()
    first_of_group = np.unique(np.asarray(rollouts.group_ids), return_index=True)[1]
    for index in first_of_group:
        prompts.update(repr((rollouts.prompt_ids[index], int(rollouts.answers[index]))).encode())
    for completion in rollouts.completion_ids:
        samples.update(repr(completion).encode())
    return {
        "step": step,
        "prompt_digest": prompts.hexdigest()[:16],
        "sample_digest": samples.hexdigest()[:16],
        "num_prompts": len(first_of_group),
        "num_samples": len(rollouts),
        "behaviour_versions": sorted(set(np.asarray(rollouts.policy_version).tolist())),
    }


def batch_metrics(scored: ScoredBatch, generated_tokens: int, seconds: dict[str, float]) -> dict[str, float]:
    """Reward, accuracy, length and timing metrics of one step's scored rollouts."""
    s, r = scored.scores, scored.rollouts
    metrics = {"reward/mean": float(s.reward.mean()), "reward/std": float(s.reward.std())}
    for name in ("boxed", "correct", "step", "combined"):
        values = getattr(s, name)
        metrics[f"reward/{name}_mean"] = float(values.mean())
        metrics[f"reward/{name}_std"] = float(values.std())
    metrics["train/accuracy"] = float(s.correct.mean())
    for k in np.unique(r.complexities):
        metrics[f"train/accuracy_k{int(k)}"] = float(s.correct[r.complexities == k].mean())
    lengths = np.array([len(c) for c in r.completion_ids])
    metrics["rollout/response_length_mean"] = float(lengths.mean())
    metrics.update(seconds)
    metrics["perf/step_s"] = sum(seconds.values())
    metrics["perf/rollout_tokens_per_s"] = generated_tokens / max(r.generate_seconds, 1e-9)
    metrics["perf/rollout_generate_s"] = r.generate_seconds
    metrics.update(scored.verifier_stats)
    return metrics


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point given to ``TorchTrainer``; ``config`` holds the run config, actor handles and tracking ids."""
    import ray.train
    import torch

    cfg = RunConfig.model_validate(config["cfg"])
    torch.set_num_threads(cfg.learner.torch_threads)
    torch.manual_seed(cfg.training.seed)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    learner_rank, state = build_learner_rank(cfg, config["init_dir"], rank, world)
    if rank == 0:
        from rlvr_ray.policy import load_vocab, materialize_policy

        vocab = load_vocab(materialize_policy(config["init_dir"]))
        Controller(
            cfg,
            vocab,
            learner_rank,
            config["rollout_group"],
            config["verifier_pool"],
            config["tracker"],
            config.get("baseline"),
        ).run(state)
    else:
        follow(cfg, learner_rank, state)
