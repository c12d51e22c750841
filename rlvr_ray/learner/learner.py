"""One learner rank: TrainBatch -> old logprobs/values -> advantages -> PPO-style epochs -> optimizer steps.

All math comes from ``rlvr_ray.algo``; this module only orders it and handles tensors, micro-batches, ranks and
the optimizer. It runs the same on one CPU process and inside a Ray Train DDP worker.

Normalisation is global: every loss term of a mini-batch is divided by the mini-batch's token (or sequence) count
summed over its micro-batches and over the ranks, so the accumulated, DDP-averaged gradient is that of the
mini-batch loss however it is split. Batch whitening (gae, reinforce_pp) and the early-stopping KL are all-reduced
too, so every rank takes the same decisions.

Off-policy correction (decoupled PPO): the clip is against the proximal policy (this learner's logprobs before
the update) and each token of a stale sample (``TrainBatch.staleness > 0``) is weighted by
min(pi_prox / pi_behaviour, ``is_cap``), the behaviour logprobs being the engine's. On-policy the weight is
exactly 1 (it is not computed), so the synchronous loss is unchanged.

Lean step: forward and backward passes run on packed rows (``rlvr_ray.learner.packing``): each prompt once, then
the completions of the rows that share it, under a block attention mask, so the cost follows the distinct tokens
instead of rows x the longest sequence (the samples of a group share their prompt); the proximal pass skips the
entropy, and the entropy of the training pass carries a graph only when ``entropy_coef > 0``. When the loss is the
policy term alone (no critic, no KL, no entropy bonus, no KL early stop), a sample whose advantage is 0 on every
token (a group of equal scores under GRPO or RLOO: all right or all wrong) adds exactly nothing to the gradient,
so neither the proximal pass nor the training passes compute it; it still counts in every normaliser, so the
update is the one over the whole batch. ``update/trained_frac`` logs the share of samples computed. In that case
the proximal pass also leaves out the first mini-batch of the first epoch: no optimizer step has happened when
that mini-batch is trained, so its own training pass gives the proximal logprobs (detached), as TRL does when it
takes one optimizer step per batch.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from rlvr_ray.algo.advantages import AdvantageInputs, compute_advantages, token_level_rewards
from rlvr_ray.algo.kl import kl_penalty
from rlvr_ray.algo.losses import (
    aggregate,
    get_aggregator,
    ppo_clip_loss,
    truncated_is_weight,
    value_loss,
)
from rlvr_ray.algo.lr_control import LRBounds, get_lr_controller
from rlvr_ray.algo.masked import masked_mean
from rlvr_ray.algo.presets import AlgorithmPreset, resolve_preset
from rlvr_ray.algo.shaping import overlong_penalty, varied_groups
from rlvr_ray.config import TrainingConfig
from rlvr_ray.learner.batch import TrainBatch
from rlvr_ray.learner.model import ForwardOut, PolicyWithValue, causal_lm_outputs
from rlvr_ray.learner.packing import PackedRows, pack_rows, prompt_lengths


@dataclass
class OldPolicyOutputs:
    """Everything computed before the update, no grad: all [N, L-1]. ``logp`` is the proximal policy."""

    logp: torch.Tensor
    values: torch.Tensor | None
    ref_logp: torch.Tensor | None

    def select(self, index: torch.Tensor, length: int) -> OldPolicyOutputs:
        """Rows ``index``, first ``length`` positions."""
        values, ref = self.values, self.ref_logp
        return OldPolicyOutputs(
            self.logp[index, :length],
            None if values is None else values[index, :length],
            None if ref is None else ref[index, :length],
        )


@dataclass
class StepTensors:
    """Per-sample tensors of one update that every optimizer step slices: all [N, L-1] except ``keep`` [N]."""

    old: OldPolicyOutputs
    adv: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor  # the loss mask: completion tokens of the kept (not dynamically dropped) samples
    keep: torch.Tensor  # [N] float, 1 for samples in the loss
    is_weight: torch.Tensor | None  # truncated IS weights, None when the whole batch is on-policy
    trained: torch.Tensor  # [N] bool, the samples the passes compute (all but those that add nothing)
    deferred: torch.Tensor  # [N] bool, samples whose ``old.logp`` (and IS weight) the first training pass fills


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


def is_weight_stats(
    weight: torch.Tensor | None, mask: torch.Tensor, stale: torch.Tensor, cap: float
) -> dict[str, float]:
    """Mean, max and clipped fraction of the IS weights over the stale samples' tokens (1, 1, 0 when none)."""
    tokens = mask * stale[:, None].to(mask.dtype)
    if weight is None or tokens.sum() == 0:
        return {"offpolicy/is_weight_mean": 1.0, "offpolicy/is_weight_max": 1.0, "offpolicy/is_clipped_frac": 0.0}
    return {
        "offpolicy/is_weight_mean": float(masked_mean(weight, tokens)),
        "offpolicy/is_weight_max": float(weight[tokens > 0].max()),
        "offpolicy/is_clipped_frac": float(masked_mean((weight >= cap).to(mask.dtype), tokens)),
    }


def packed(batch: TrainBatch) -> PackedRows:
    """The batch's rows packed (one copy of each shared prompt) for a forward pass."""
    return pack_rows(batch.input_ids, batch.attention_mask, prompt_lengths(batch.attention_mask, batch.mask))


def trimmed(batch: TrainBatch) -> TrainBatch:
    """The batch without the columns that are padding in every row (right padding: the longest row's length)."""
    length = int(batch.attention_mask.sum(dim=-1).max())
    if length == batch.input_ids.shape[1]:
        return batch
    return TrainBatch(
        input_ids=batch.input_ids[:, :length],
        attention_mask=batch.attention_mask[:, :length],
        mask=batch.mask[:, : length - 1],
        engine_logp=batch.engine_logp[:, : length - 1],
        scores=batch.scores,
        group_ids=batch.group_ids,
        staleness=batch.staleness,
    )


class Learner:
    """Holds the trainable module, the frozen reference and the optimizer of one rank.

    ``module`` may be the DDP-wrapped ``PolicyWithValue``; ``policy`` is always the bare one (for saving/sync).
    """

    def __init__(
        self, cfg: TrainingConfig, policy: PolicyWithValue, module: nn.Module, reference: nn.Module | None
    ) -> None:
        self.cfg = cfg
        self.preset: AlgorithmPreset = resolve_preset(cfg.algorithm, cfg.loss_agg_mode, cfg.cliprange_high)
        self.kl_in_reward = cfg.kl_in_reward if cfg.kl_in_reward is not None else self.preset.kl_in_reward
        self.policy = policy
        self.module = module
        self.reference = reference
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # Whether the passes may leave out samples with zero advantage, and the proximal pass the first mini-batch:
        # only when the policy term is the whole loss (no critic values, reference logprobs or entropy bonus).
        self.lean = not self.preset.use_critic and cfg.kl_coef == 0 and cfg.entropy_coef == 0 and not cfg.early_stopping

    # ------------------------------------------------------------------------------------------------------------
    # Collectives (no-ops on a single process)

    @staticmethod
    def _world() -> int:
        dist = torch.distributed
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def global_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over every learner rank (every rank must call this at the same point)."""
        if self._world() == 1:
            return x
        device = x.device
        if torch.distributed.get_backend() == "nccl" and device.type != "cuda":  # NCCL reduces CUDA tensors only
            x = x.to(next(self.policy.parameters()).device)
        x = x.detach().clone()
        torch.distributed.all_reduce(x)
        return x.to(device)

    def _no_sync(self) -> contextlib.AbstractContextManager[None]:
        """DDP's ``no_sync`` (accumulate locally, no all-reduce); a no-op for a bare module."""
        if isinstance(self.module, nn.parallel.DistributedDataParallel):
            return self.module.no_sync()
        return contextlib.nullcontext()

    def _grad_scale(self) -> float:
        """DDP averages gradients over ranks; the loss is scaled back so the result is the global-batch gradient."""
        ddp = isinstance(self.module, nn.parallel.DistributedDataParallel)
        return float(self._world()) if ddp else 1.0

    # ------------------------------------------------------------------------------------------------------------
    # Before the update

    def forward(self, batch: TrainBatch, with_entropy_grad: bool = False) -> ForwardOut:
        return self.module(
            batch.input_ids, batch.attention_mask, self.cfg.temperature, with_entropy_grad, packed(batch)
        )

    @staticmethod
    def parts(index: torch.Tensor, rows: int) -> list[torch.Tensor]:
        """``index`` split into parts of at most ``rows`` rows (each pass packs its part's rows, see ``packed``).
        Losses are sums over parts divided by global counts, so the split changes only the order of additions."""
        return [index[i : i + rows] for i in range(0, len(index), rows)]

    @torch.no_grad()
    def old_outputs(self, batch: TrainBatch, rows: torch.Tensor | None = None) -> OldPolicyOutputs:
        """Proximal logprobs (and values, reference logprobs) [N, L-1] of the batch, in one packed pass; 0 on
        positions past each row's end, and on every position of the rows left out of ``rows`` (default: all)."""
        zeros = torch.zeros_like(batch.mask)
        logp = zeros.clone()
        values = zeros.clone() if self.preset.use_critic else None
        ref_logp = zeros.clone() if self.reference is not None else None
        rows = torch.arange(len(batch)) if rows is None else rows
        if len(rows) == 0:  # every sample left out (lean): nothing to compute
            return OldPolicyOutputs(logp, values, ref_logp)
        sub = trimmed(batch.select(rows))
        width, pack = sub.mask.shape[1], packed(sub)
        out = self.policy.logprobs_and_values(sub.input_ids, sub.attention_mask, self.cfg.temperature, pack)
        logp[rows, :width] = out.logp
        if values is not None and out.values is not None:
            values[rows, :width] = out.values
        if ref_logp is not None and self.reference is not None:
            logits, _ = causal_lm_outputs(self.reference, sub.input_ids, sub.attention_mask, pack, hidden=False)
            scaled = torch.log_softmax(logits[:, :-1].float() / self.cfg.temperature, dim=-1)
            ref_logp[rows, :width] = scaled.gather(-1, sub.input_ids[:, 1:, None]).squeeze(-1)
        return OldPolicyOutputs(logp, values, ref_logp)

    def shaped_scores(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(scores [N] after DAPO's overlong punishment, keep [N] float after its dynamic sampling, stats)."""
        cfg, scores, stats = self.cfg, batch.scores, {}
        if self.preset.overlong_shaping and cfg.overlong_penalty > 0:
            lengths = batch.mask.sum(dim=-1)
            penalty = overlong_penalty(lengths, cfg.max_generation_length, cfg.overlong_buffer, cfg.overlong_penalty)
            scores = scores + penalty.to(scores.dtype)
            stats["reward/overlong_penalty_mean"] = float(penalty.mean())
        keep = torch.ones_like(scores)
        if self.preset.dynamic_sampling:
            keep = varied_groups(scores, batch.group_ids).to(scores.dtype)
            kept, total = self.global_sum(
                torch.stack([keep.sum(), torch.tensor(float(len(keep)), device=keep.device)])
            ).tolist()
            stats["dynamic_sampling/kept_frac"] = kept / total
        return scores, keep, stats

    def advantages(
        self, batch: TrainBatch, old: OldPolicyOutputs | None, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token advantages and returns [N, T] by the preset's estimator (KL folded into rewards if configured).

        ``old`` may be None when the estimator reads neither values nor a KL (see ``lean``)."""
        cfg = self.cfg
        scores = batch.scores if scores is None else scores
        kl = None
        if cfg.kl_coef > 0 and self.kl_in_reward and old is not None and old.ref_logp is not None:
            kl = kl_penalty(old.logp, old.ref_logp, cfg.kl_estimator)
        inputs = AdvantageInputs(
            mask=batch.mask,
            scores=scores,
            group_ids=batch.group_ids,
            token_rewards=token_level_rewards(scores, batch.mask, kl, cfg.kl_coef),
            values=None if old is None else old.values,
        )
        return compute_advantages(
            self.preset.advantage, inputs, gamma=cfg.gamma, lam=cfg.lam, global_sum=self.global_sum
        )

    def old_and_advantages(
        self, batch: TrainBatch, scores: torch.Tensor, keep: torch.Tensor, first: torch.Tensor | None
    ) -> tuple[OldPolicyOutputs, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(proximal outputs, advantages, returns, trained [N] bool, deferred [N] bool). When ``lean``, the
        advantages come first and the proximal pass computes only the samples the loss can move (those kept, with
        an advantage that is not 0 on every token) and, of those, not the ones in ``first`` (deferred)."""
        if not self.lean:
            old = self.old_outputs(batch)
            adv, returns = self.advantages(batch, old, scores)
            everything = torch.ones(len(batch), dtype=torch.bool)
            return old, adv, returns, everything, ~everything
        adv, returns = self.advantages(batch, None, scores)
        trained = (adv != 0).any(dim=-1) & (keep > 0)
        deferred = torch.zeros_like(trained)
        if first is not None:
            deferred[first] = True
        deferred &= trained
        return self.old_outputs(batch, (trained & ~deferred).nonzero().flatten()), adv, returns, trained, deferred

    def prepare(self, batch: TrainBatch, first: torch.Tensor | None = None) -> tuple[StepTensors, dict[str, float]]:
        """Everything the optimizer steps read, computed once before the update, and its stats. ``first``: the
        rows of the first optimizer step, whose proximal logprobs that step fills (only when ``lean``); the
        stats of the proximal logprobs are then left to :meth:`proximal_stats` after that step."""
        scores, keep, stats = self.shaped_scores(batch)
        old, adv, returns, trained, deferred = self.old_and_advantages(batch, scores, keep, first)
        stale = batch.staleness > 0
        weight = None
        if bool(stale.any()):
            weight = truncated_is_weight(old.logp, batch.engine_logp, stale, self.cfg.is_cap)
        tensors = StepTensors(old, adv, returns, batch.mask * keep[:, None], keep, weight, trained, deferred)
        if not bool(deferred.any()):
            stats.update(self.proximal_stats(batch, tensors))
        stats["update/trained_frac"] = float(trained.float().mean())
        if self.cfg.kl_coef > 0 and self.kl_in_reward and old.ref_logp is not None:
            stats["reward/kl"] = float(
                masked_mean(kl_penalty(old.logp, old.ref_logp, self.cfg.kl_estimator), batch.mask)
            )
        stats["advantage/mean"] = float(masked_mean(adv, batch.mask))
        return tensors, stats

    def proximal_stats(self, batch: TrainBatch, t: StepTensors) -> dict[str, float]:
        """Engine-vs-learner mismatch and IS-weight stats over the samples whose proximal logprobs were computed.

        The mismatch is over on-policy samples only: for a stale sample the difference is the policy's own change
        since it was generated, not a mismatch (omitted when no such sample is on-policy)."""
        computed = batch.mask * t.trained.to(batch.mask.dtype)[:, None]
        on_policy = computed * (batch.staleness == 0).to(batch.mask.dtype)[:, None]
        stats = logprob_mismatch(t.old.logp, batch.engine_logp, on_policy) if bool(on_policy.any()) else {}
        stats.update(is_weight_stats(t.is_weight, computed, batch.staleness > 0, self.cfg.is_cap))
        return stats

    @torch.no_grad()
    def fill_deferred(self, batch: TrainBatch, t: StepTensors, logp: torch.Tensor) -> None:
        """The deferred rows of ``t`` (one micro-batch) take ``logp``, the first training pass's, as proximal."""
        rows = t.deferred[:, None]
        t.old.logp = torch.where(rows, logp, t.old.logp)
        if t.is_weight is not None:
            weight = truncated_is_weight(t.old.logp, batch.engine_logp, batch.staleness > 0, self.cfg.is_cap)
            t.is_weight = torch.where(rows, weight, t.is_weight)

    # ------------------------------------------------------------------------------------------------------------
    # The update

    def micro_step_loss(
        self, batch: TrainBatch, t: StepTensors, denominator: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float], float]:
        """The loss of one micro-batch (``t`` sliced to it), its stats and its summed token entropy.

        Every term is normalised by the mini-batch's global ``denominator`` (already divided by the DDP scale).
        """
        cfg, mode = self.cfg, self.preset.loss_agg_mode
        norm = cfg.max_generation_length  # Dr.GRPO's constant normaliser: the generation budget
        out = self.forward(batch, with_entropy_grad=cfg.entropy_coef > 0)
        if bool(t.deferred.any()):
            self.fill_deferred(batch, t, out.logp.detach())
        loss, ppo_stats = ppo_clip_loss(
            out.logp, t.old.logp, t.adv, t.mask, cfg.cliprange, self.preset.clip_high, mode, norm,
            denominator=denominator, is_weight=t.is_weight,
        )  # fmt: skip
        stats = {f"ppo/{k}": v for k, v in ppo_stats.items()}
        stats["loss/policy"] = float(loss.detach())
        if self.preset.use_critic and out.values is not None and t.old.values is not None:
            v_loss, v_stats = value_loss(
                out.values, t.old.values, t.returns, t.mask, cfg.cliprange_value, mode, norm, denominator
            )
            loss = loss + cfg.vf_coef * v_loss
            stats.update({f"value/{k}": v for k, v in v_stats.items()}, **{"loss/value": float(v_loss.detach())})
        if cfg.kl_coef > 0 and not self.kl_in_reward and t.old.ref_logp is not None:
            kl = aggregate(kl_penalty(out.logp, t.old.ref_logp, cfg.kl_estimator), t.mask, mode, norm, denominator)
            stats["loss/kl"] = float(kl.detach())
            loss = loss + cfg.kl_coef * kl
        assert out.entropy is not None
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * aggregate(out.entropy, t.mask, mode, norm, denominator)
        return loss, stats, float((out.entropy.detach() * t.mask).sum())

    def update(self, batch: TrainBatch, world_size: int = 1) -> dict[str, float]:
        """One RL step on this rank's share of the batch; returns averaged stats."""
        cfg = self.cfg
        self.module.train()
        batch = trimmed(batch)
        stats_sum: dict[str, float] = defaultdict(float)
        mini = max(1, cfg.mini_batch_size // world_size)
        micro = max(1, mini // cfg.gradient_accumulation_steps)
        first_order = torch.randperm(len(batch), generator=self.generator)
        tensors, prepared = self.prepare(batch, first_order[:mini] if self.lean else None)
        deferred = bool(tensors.deferred.any())
        n_steps, stopped_early = 0, 0.0
        step_kl = torch.zeros(2, dtype=torch.float64)  # the whole step's sum of token approx-KL, token count
        for epoch in range(cfg.ppo_epochs):
            order = first_order if epoch == 0 else torch.randperm(len(batch), generator=self.generator)
            kl_sums = torch.zeros(2, dtype=torch.float64)  # this epoch's
            for start in range(0, len(batch), mini):
                step_stats, mini_kl = self._optimizer_step(batch, tensors, order[start : start + mini], micro)
                kl_sums += mini_kl
                for k, v in step_stats.items():
                    stats_sum[k] += v
                n_steps += 1
            step_kl += kl_sums
            if cfg.early_stopping:
                kl_total, tokens = self.global_sum(kl_sums).tolist()
                if kl_total / max(tokens, 1.0) > cfg.target_kl:
                    stopped_early = 1.0
                    break
        stats = {k: v / n_steps for k, v in stats_sum.items()}
        if deferred:  # the first optimizer step has filled the proximal logprobs it deferred
            assert not bool(tensors.deferred.any())
            prepared.update(self.proximal_stats(batch, tensors))
        stats.update(prepared)
        stats.update({"ppo/optimizer_steps": float(n_steps), "ppo/early_stopped": stopped_early})
        stats.update(self.control_lr(step_kl))
        return stats

    @property
    def lr_bounds(self) -> LRBounds:
        """The learning-rate guard's target and bounds, read from the config."""
        cfg = self.cfg
        return LRBounds(
            cfg.lr_control_target_kl, cfg.lr_control_factor, cfg.learning_rate * cfg.lr_control_min_scale,
            cfg.learning_rate,
        )  # fmt: skip

    def control_lr(self, kl_sums: torch.Tensor) -> dict[str, float]:
        """Set the next step's learning rate from this step's approx KL ([2]: sum over tokens, token count, this
        rank's; the token mean is over every rank, so all ranks set the same rate). Stats: ``update/lr``, the rate
        this step used, and ``update/step_kl``."""
        kl_total, tokens = self.global_sum(kl_sums).tolist()
        kl = kl_total / max(tokens, 1.0)
        lr = float(self.optimizer.param_groups[0]["lr"])
        next_lr = get_lr_controller(self.cfg.lr_control)(lr, kl, self.lr_bounds)
        for group in self.optimizer.param_groups:
            group["lr"] = next_lr
        return {"update/lr": lr, "update/step_kl": kl}

    def _optimizer_step(
        self, batch: TrainBatch, t: StepTensors, index: torch.Tensor, micro: int
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One optimizer step on the mini-batch ``index``, in micro-batches of ``micro`` rows.

        Returns the stats (loss terms as the rank's mini-batch means, ppo/* as micro-batch averages, the token-mean
        entropy of the computed samples) and the [2] float64 tensor (sum of per-token approx-KL, token count) for
        early stopping. Only the samples ``t.trained`` holds are computed (at least one, so that every rank runs a
        backward, in which DDP all-reduces, and the optimizer steps on zero gradients rather than on none).
        """
        self.optimizer.zero_grad(set_to_none=True)
        per_sequence = get_aggregator(self.preset.loss_agg_mode).per_sequence
        local = (t.keep[index] if per_sequence else t.mask[index]).sum()
        denominator = self.global_sum(local).clamp(min=1) / self._grad_scale()
        # Loss stats are logged as this rank's mini-batch means: rescale from the global denominator.
        rescale = float(denominator / local.clamp(min=1))
        computed = index[t.trained[index]]
        parts = self.parts(computed if len(computed) else index[:1], micro)
        stats_sum: dict[str, float] = defaultdict(float)
        kl = torch.zeros(2, dtype=torch.float64)
        entropy = 0.0
        for i, part in enumerate(parts):
            sub_batch = trimmed(batch.select(part))
            length = sub_batch.mask.shape[1]
            sub = StepTensors(
                t.old.select(part, length),
                t.adv[part, :length],
                t.returns[part, :length],
                t.mask[part, :length] * t.trained[part, None],  # 0 for the stand-in row of a mini-batch with none
                t.keep[part],
                None if t.is_weight is None else t.is_weight[part, :length],
                t.trained[part],
                t.deferred[part],
            )
            # Under DDP, gradients are all-reduced once, with the last part's backward (the sum is the same).
            with self._no_sync() if i < len(parts) - 1 else contextlib.nullcontext():
                loss, stats, part_entropy = self.micro_step_loss(sub_batch, sub, denominator)
                loss.backward()
            if bool(sub.deferred.any()):  # keep what this pass filled for the later steps and the stats
                t.old.logp[part, :length] = sub.old.logp
                if t.is_weight is not None and sub.is_weight is not None:
                    t.is_weight[part, :length] = sub.is_weight
                t.deferred[part] = False
            tokens = float(sub.mask.sum())
            entropy += part_entropy
            kl += torch.tensor([stats["ppo/approx_kl"] * tokens, tokens], dtype=torch.float64)
            for k, v in stats.items():
                stats_sum[k] += v * rescale if k.startswith("loss/") else v / len(parts)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        stats_sum["policy/grad_norm"] = float(grad_norm)
        stats_sum["policy/entropy"] = entropy / max(float(kl[1]), 1.0)
        return dict(stats_sum), kl
