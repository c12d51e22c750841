"""The controller: the only module that knows the order of the stages.

    sample prompts -> rollout -> verify -> advantages + update -> weight sync -> log / eval / checkpoint

It runs on learner rank 0 inside the Ray Train worker group; other ranks run :func:`follow`, which mirrors the
collective calls (the batch broadcast inside ``update`` and the Ray Train reports) on the same schedule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlvr_ray.config import RunConfig
from rlvr_ray.eval import evaluate, rows_to_metrics
from rlvr_ray.learner.checkpoint import LoopState, save_checkpoint
from rlvr_ray.learner.worker import LearnerRank, build_learner_rank
from rlvr_ray.sync.push import make_weight_push
from rlvr_ray.task.prompts import PromptSampler
from rlvr_ray.task.vocab import Vocab
from rlvr_ray.types import Completion, PromptBatch, SamplingSpec, ScoredBatch


def is_eval_step(cfg: RunConfig, step: int) -> bool:
    return (step + 1) % cfg.training.eval_every == 0 or step + 1 == cfg.training.total_steps


def is_checkpoint_step(cfg: RunConfig, step: int) -> bool:
    return (step + 1) % cfg.training.checkpoint_every == 0 or step + 1 == cfg.training.total_steps


class Timer:
    """Wall time per stage of one step, as ``perf/<stage>_s`` metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[f"perf/{stage}_s"] = time.perf_counter() - start
        return result


class Controller:
    """Drives the RL loop on rank 0. Each collaborator got only its own config section when it was built."""

    def __init__(
        self, cfg: RunConfig, vocab: Vocab, learner: LearnerRank, rollout_group: Any, verifier_pool: Any, tracker: Any
    ) -> None:
        self.cfg, self.vocab, self.learner = cfg, vocab, learner
        self.rollout, self.verifier, self.tracker = rollout_group, verifier_pool, tracker
        self.push_weights = make_weight_push(cfg.sync, rollout_group)
        self.state_on_cpu = cfg.sync.backend == "object_store"  # NCCL broadcasts straight from the GPU
        t = cfg.training
        self.sampler = PromptSampler(self.vocab, t.complexity_range, t.prompts_per_step, t.seed, t.max_prompt_length)
        self.sampling = SamplingSpec(
            n=t.group_size,
            temperature=t.temperature,
            top_p=t.top_p,
            max_tokens=t.max_generation_length,
            stop_token_id=self.vocab.eoe,
            seed=t.seed,
        )

    def run(self, state: LoopState) -> None:
        import ray.train
        from ray.experimental.tqdm_ray import tqdm

        total = self.cfg.training.total_steps
        self.push_weights(self.learner.policy_state(self.state_on_cpu), state.step)  # engines may hold other weights
        bar = tqdm(total=total, desc="rl")
        bar.update(state.step)
        for step in range(state.step, total):
            metrics = self.step(step)
            state.step = step + 1
            if is_eval_step(self.cfg, step):
                metrics.update(self.held_out_eval())
                state.best_eval_accuracy = max(state.best_eval_accuracy, metrics["eval/accuracy"])
            self.tracker.log_metrics(metrics, step)
            bar.set_description(f"rl reward {metrics['reward/mean']:.3f} acc {metrics['train/accuracy']:.3f}")
            bar.update(1)
            if is_checkpoint_step(self.cfg, step):
                save_checkpoint(self.cfg.output_dir, self.learner.learner, self.vocab, state)
            if is_eval_step(self.cfg, step):
                ray.train.report({**metrics, "step": step + 1, "best_eval_accuracy": state.best_eval_accuracy})
        bar.close()
        self.save_final_policy()

    def step(self, step: int) -> dict[str, float]:
        """One RL step; returns its metrics."""
        timer = Timer()
        prompts: PromptBatch = timer.run("sample", self.sampler.sample, step)  # 1. prompt
        sampling = dataclasses.replace(self.sampling, seed=self.sampling.seed * 1_000_003 + step)  # fresh per step
        rollouts = timer.run("rollout", self.rollout.generate, prompts, sampling)  # 2. rollout
        self.check_versions(rollouts.policy_version, expected=step)
        scored: ScoredBatch = timer.run("verify", self.verifier.score, rollouts)  # 3. verify
        stats = timer.run("update", self.learner.update, scored)  # 4. advantages + loss, 5. update
        timer.run("sync", self.push_weights, self.learner.policy_state(self.state_on_cpu), step + 1)  # 6. weight sync
        return {
            **batch_metrics(scored, rollouts.num_generated_tokens, timer.seconds),
            **stats,
            "sync/version": step + 1,
        }

    @staticmethod
    def check_versions(versions: np.ndarray, expected: int) -> None:
        if not np.all(versions == expected):
            raise RuntimeError(
                f"stale rollouts: generated by weight versions {sorted(set(versions.tolist()))}, expected {expected}"
            )

    def held_out_eval(self) -> dict[str, float]:
        """Greedy held-out accuracy per complexity, generated by the running engines (so it checks the sync too)."""
        e = self.cfg.eval
        rows = evaluate(
            self.engine_generate, self.vocab, e.complexities, e.n, e.seed, self.cfg.training.max_generation_length
        )
        return rows_to_metrics(rows)

    def engine_generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        batch = PromptBatch(prompts, np.zeros(len(prompts), np.int64), np.zeros(len(prompts), np.int64))
        out = self.rollout.generate(batch, spec)
        return [
            Completion(int(g), c, lp) for g, c, lp in zip(out.group_ids, out.completion_ids, out.logprobs, strict=True)
        ]

    def save_final_policy(self) -> None:
        import shutil

        from rlvr_ray.policy import save_policy

        final = Path(self.cfg.output_dir) / "final_policy"
        tmp = final.with_name("final_policy.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        save_policy(self.learner.learner.policy.policy, self.vocab, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)


def follow(cfg: RunConfig, learner: LearnerRank, state: LoopState) -> None:
    """Ranks > 0: train on each broadcast batch and join rank 0's Ray Train reports on the same steps."""
    import ray.train

    for step in range(state.step, cfg.training.total_steps):
        learner.update(None)
        if is_eval_step(cfg, step):
            ray.train.report({})


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
    metrics["perf/rollout_tokens_per_s"] = generated_tokens / max(seconds.get("perf/rollout_s", 0.0), 1e-9)
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
        from rlvr_ray.policy import load_vocab

        vocab = load_vocab(config["init_dir"])
        Controller(cfg, vocab, learner_rank, config["rollout_group"], config["verifier_pool"], config["tracker"]).run(
            state
        )
    else:
        follow(cfg, learner_rank, state)
