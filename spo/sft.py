"""Supervised fine-tuning step (the warm start of a tiny model on a task's reference solutions)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spo.losses import masked_mean
from spo.policy.logprobs import response_logprobs


def sft_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    prompt_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    pad_id: int,
    grad_clip: float = 1.0,
) -> float:
    """One step of token-mean cross-entropy on the target tokens only; returns the loss.

    Args:
        prompt_ids: B prompts (conditioning only, no loss).
        target_ids: B reference responses, the stop token included so the model learns to stop.
    """
    optimizer.zero_grad(set_to_none=True)
    logp, real = response_logprobs(model, prompt_ids, target_ids, 1.0, pad_id)  # (B, T), (B, T)
    loss = -masked_mean(logp, real)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())
