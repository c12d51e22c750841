"""One learner rank: TrainBatch -> old logprobs/values -> advantages -> PPO-style epochs -> optimizer steps.

All math comes from ``rlvr_ray.algo``; this module only orders it and handles tensors, micro-batches and the
optimizer. It runs the same on one CPU process and inside a Ray Train DDP worker.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from rlvr_ray.algo.advantages import AdvantageInputs, compute_advantages, token_level_rewards
from rlvr_ray.algo.kl import kl_penalty
from rlvr_ray.algo.losses import aggregate, ppo_clip_loss, value_loss
from rlvr_ray.algo.presets import AlgorithmPreset, resolve_preset
from rlvr_ray.config import TrainingConfig
from rlvr_ray.learner.batch import TrainBatch
from rlvr_ray.learner.model import ForwardOut, PolicyWithValue


@dataclass
class OldPolicyOutputs:
    """Everything computed before the update, no grad: all [N, L-1]."""

    logp: torch.Tensor
    values: torch.Tensor | None
    ref_logp: torch.Tensor | None


def logprob_mismatch(learner_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the engine's logprobs of the sampled tokens are from the learner's: ~0 on-policy in fp32."""
    n = mask.sum().clamp(min=1)
    diff = (learner_logp - engine_logp) * mask
    ratio = torch.exp(diff) * mask
    return {
        "mismatch/logprob_abs_diff": float(diff.abs().sum() / n),
        "mismatch/logprob_max_abs_diff": float(diff.abs().max()),
        "mismatch/ratio_mean": float(ratio.sum() / n),
    }


class Learner:
    """Holds the trainable module, the frozen reference and the optimizer of one rank.

    ``module`` may be the DDP-wrapped ``PolicyWithValue``; ``policy`` is always the bare one (for saving/sync).
    """

    def __init__(
        self, cfg: TrainingConfig, policy: PolicyWithValue, module: nn.Module, reference: nn.Module | None
    ) -> None:
        self.cfg = cfg
        self.preset: AlgorithmPreset = resolve_preset(cfg.algorithm, cfg.loss_agg_mode, cfg.cliprange_high)
        self.policy = policy
        self.module = module
        self.reference = reference
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def forward(self, batch: TrainBatch) -> ForwardOut:
        return self.module(batch.input_ids, batch.attention_mask, self.cfg.temperature)

    @torch.no_grad()
    def old_outputs(self, batch: TrainBatch) -> OldPolicyOutputs:
        out = self.forward(batch)
        ref_logp = None
        if self.reference is not None:
            logits = self.reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            scaled = torch.log_softmax(logits[:, :-1].float() / self.cfg.temperature, dim=-1)
            ref_logp = scaled.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        return OldPolicyOutputs(out.logp, out.values, ref_logp)

    def advantages(self, batch: TrainBatch, old: OldPolicyOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Token advantages and returns [N, T] by the preset's estimator (KL folded into rewards if configured)."""
        cfg = self.cfg
        kl = None
        if cfg.kl_coef > 0 and cfg.kl_in_reward and old.ref_logp is not None:
            kl = kl_penalty(old.logp, old.ref_logp, cfg.kl_estimator)
        inputs = AdvantageInputs(
            mask=batch.mask,
            scores=batch.scores,
            group_ids=batch.group_ids,
            token_rewards=token_level_rewards(batch.scores, batch.mask, kl, cfg.kl_coef),
            values=old.values,
        )
        return compute_advantages(self.preset.advantage, inputs, gamma=cfg.gamma, lam=cfg.lam)

    def micro_step_loss(
        self, batch: TrainBatch, old: OldPolicyOutputs, adv: torch.Tensor, returns: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of one micro-batch and its stats."""
        cfg, mode = self.cfg, self.preset.loss_agg_mode
        norm = cfg.max_generation_length  # Dr.GRPO's constant normaliser: the generation budget
        out = self.forward(batch)
        loss, stats = ppo_clip_loss(
            out.logp, old.logp, adv, batch.mask, cfg.cliprange, self.preset.clip_high, mode, norm
        )
        stats = {f"ppo/{k}": v for k, v in stats.items()}
        stats["loss/policy"] = float(loss.detach())
        if self.preset.use_critic and out.values is not None and old.values is not None:
            v_loss, v_stats = value_loss(out.values, old.values, returns, batch.mask, cfg.cliprange_value, mode, norm)
            loss = loss + cfg.vf_coef * v_loss
            stats.update({f"value/{k}": v for k, v in v_stats.items()}, **{"loss/value": float(v_loss.detach())})
        if cfg.kl_coef > 0 and old.ref_logp is not None:
            kl = aggregate(kl_penalty(out.logp, old.ref_logp, cfg.kl_estimator), batch.mask, mode, norm)
            stats["loss/kl"] = float(kl.detach())
            if not cfg.kl_in_reward:
                loss = loss + cfg.kl_coef * kl
        entropy = aggregate(out.entropy, batch.mask, mode, norm)
        stats["policy/entropy"] = float(entropy.detach())
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * entropy
        return loss, stats

    def update(self, batch: TrainBatch, world_size: int = 1) -> dict[str, float]:
        """One RL step on this rank's share of the batch; returns averaged stats."""
        cfg = self.cfg
        self.module.train()
        old = self.old_outputs(batch)
        stats_sum: dict[str, float] = defaultdict(float)
        stats_sum.update(logprob_mismatch(old.logp, batch.engine_logp, batch.mask))
        adv, returns = self.advantages(batch, old)
        mini = max(1, cfg.mini_batch_size // world_size)
        micro = max(1, mini // cfg.gradient_accumulation_steps)
        n_steps, stopped_early = 0, 0.0
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(batch), generator=self.generator)
            epoch_kl = []
            for start in range(0, len(batch), mini):
                step_stats = self._optimizer_step(batch, old, adv, returns, order[start : start + mini], micro)
                epoch_kl.append(step_stats.get("ppo/approx_kl", 0.0))
                for k, v in step_stats.items():
                    stats_sum[k] += v
                n_steps += 1
            if cfg.early_stopping and sum(epoch_kl) / len(epoch_kl) > cfg.target_kl:
                stopped_early = 1.0
                break
        stats = {k: (v / n_steps if not k.startswith("mismatch/") else v) for k, v in stats_sum.items()}
        stats.update({"ppo/optimizer_steps": float(n_steps), "ppo/early_stopped": stopped_early})
        stats["advantage/mean"] = float((adv * batch.mask).sum() / batch.mask.sum().clamp(min=1))
        return stats

    def _optimizer_step(
        self,
        batch: TrainBatch,
        old: OldPolicyOutputs,
        adv: torch.Tensor,
        returns: torch.Tensor,
        index: torch.Tensor,
        micro: int,
    ) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        parts = [index[i : i + micro] for i in range(0, len(index), micro)]
        stats_sum: dict[str, float] = defaultdict(float)
        for part in parts:
            sub_old = OldPolicyOutputs(
                old.logp[part],
                None if old.values is None else old.values[part],
                None if old.ref_logp is None else old.ref_logp[part],
            )
            loss, stats = self.micro_step_loss(batch.select(part), sub_old, adv[part], returns[part])
            (loss / len(parts)).backward()
            for k, v in stats.items():
                stats_sum[k] += v / len(parts)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        stats_sum["policy/grad_norm"] = float(grad_norm)
        return dict(stats_sum)
