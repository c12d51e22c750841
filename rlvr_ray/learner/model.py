"""The trainable module: the HF policy plus an optional scalar value head (PPO's critic), one nn.Module for DDP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from rlvr_ray.algo.losses import entropy_from_logits
from rlvr_ray.learner.packing import PackedRows, unpack

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM


@dataclass
class ForwardOut:
    """Per-token outputs aligned with TrainBatch.mask: all [N, L-1]."""

    logp: torch.Tensor
    entropy: torch.Tensor | None
    values: torch.Tensor | None


class PolicyWithValue(nn.Module):
    """``forward(input_ids, attention_mask, temperature) -> ForwardOut``; the value head reads the last hidden state.

    With ``pack`` (:func:`rlvr_ray.learner.packing.pack_rows` of the same rows) the policy runs on the packed rows
    and the outputs are gathered back to the rows' layout: the same values, computed once per shared prompt."""

    def __init__(self, policy: LlamaForCausalLM, with_value_head: bool) -> None:
        super().__init__()
        self.policy = policy
        hidden = int(policy.config.hidden_size)
        self.value_head = nn.Linear(hidden, 1) if with_value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float,
        with_entropy_grad: bool = False,
        pack: PackedRows | None = None,
    ) -> ForwardOut:
        """Logprobs of the next tokens, their entropy (differentiable only if ``with_entropy_grad``), values."""
        logits, values = self._logits_and_values(input_ids, attention_mask, pack)
        scaled = logits[:, :-1].float() / temperature
        logp = torch.log_softmax(scaled, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        if with_entropy_grad:
            entropy = entropy_from_logits(scaled)
        else:
            with torch.no_grad():
                entropy = entropy_from_logits(scaled.detach())
        return ForwardOut(logp=logp, entropy=entropy, values=values)

    def logprobs_and_values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float, pack: PackedRows | None = None
    ) -> ForwardOut:
        """As :meth:`forward` without the entropy (None): what the learner needs of the policy before an update."""
        logits, values = self._logits_and_values(input_ids, attention_mask, pack)
        scaled = logits[:, :-1].float() / temperature
        logp = torch.log_softmax(scaled, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        return ForwardOut(logp=logp, entropy=None, values=values)

    def _logits_and_values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pack: PackedRows | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, hidden = causal_lm_outputs(self.policy, input_ids, attention_mask, pack, self.value_head is not None)
        values = None
        if self.value_head is not None and hidden is not None:
            values = self.value_head(hidden[:, :-1]).squeeze(-1)
        return logits, values


def causal_lm_outputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, pack: PackedRows | None, hidden: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An HF causal LM's logits [N, L, V] of the rows, and its last hidden state [N, L, H] if ``hidden``; run on
    the packed rows and gathered back to the rows' layout when ``pack`` is given."""
    if pack is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden)
        return out.logits, out.hidden_states[-1] if hidden else None
    out = model(
        input_ids=pack.input_ids,
        attention_mask=pack.attention_mask,
        position_ids=pack.position_ids,
        output_hidden_states=hidden,
    )
    return unpack(out.logits, pack), unpack(out.hidden_states[-1], pack) if hidden else None
