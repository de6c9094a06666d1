"""The policy's PPO update as the train stage runs it (in one process or in each rank of a distributed one):
the iteration's episodes with their reference log-probs, and one `spo.ppo.ppo_step` per batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spo.policy.transformers_engine import set_activation_checkpointing, train_dtype
from spo.ppo import Episode, PPOSettings, epoch_episodes, ppo_step
from stages.runtime.artifacts import StageContext


@dataclass
class PolicyUpdate:
    """PPO-clip on the policy, as `optimize` runs it: the episodes of each epoch (whitened over the epoch where
    `train.whiten` says so), then one `spo.ppo.ppo_step` per batch (this process's share of it)."""

    model: torch.nn.Module
    settings: PPOSettings
    lr: float
    """Peak learning rate (`train.lr`)."""
    low_precision: bool
    """Compute in bfloat16 over float32 master weights (`train.precision`, docs/design.md#optimizer)."""
    rank: int = 0
    world: int = 1
    name: str = "train"
    """The seed stream of the episode order and the progress bar's name."""

    def epoch(self, chosen: list[Episode]) -> list[Episode]:
        return epoch_episodes(chosen, self.settings)

    def step(self, optimizer: torch.optim.Optimizer, batch: list[Episode]) -> dict:
        device = next(self.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.low_precision):
            return ppo_step(self.model, optimizer, batch, self.settings, rank=self.rank, world=self.world)


def policy_update(ctx: StageContext, rows: list[dict], ref_logps: list | None, model: torch.nn.Module, pad_id: int,
                  rank: int = 0, world: int = 1) -> tuple[list[Episode], PolicyUpdate]:
    """The iteration's episodes (rows of episodes.parquet with their reference log-probs) and the update."""
    cfg, t = ctx.cfg, ctx.cfg.train
    refs = ref_logps if ref_logps is not None else [r["old_logp"] for r in rows]
    episodes = [Episode(r["prompt_ids"], r["response_ids"], r["advantages"], r["mask"], r["old_logp"], ref)
                for r, ref in zip(rows, refs)]
    settings = PPOSettings(micro_batch_size=t.micro_batch_size, temperature=cfg.sample.temperature, pad_id=pad_id,
                           clip=t.clip, kl_coef=t.kl_coef, whiten=t.whiten, grad_clip=t.grad_clip,
                           loss_agg=t.loss_agg, clip_high=t.clip_high, ratio=t.ratio,
                           max_new_tokens=cfg.sample.max_new_tokens)
    device = next(model.parameters()).device
    low_precision = train_dtype(t.precision, cfg.model.dtype, device) == torch.bfloat16
    set_activation_checkpointing(model, t.activation_checkpointing)  # the live trainer: on or off at each iteration
    return episodes, PolicyUpdate(model, settings, t.lr, low_precision, rank, world)


def reference_logps(reference, rows: list[dict], temperature: float) -> list[list[float]]:
    """Log-probs of the frozen initial policy (`reference`, the engine of checkpoint 0), temperature-scaled
    like the old ones."""
    scores = reference.score([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], temperature)
    return [s.tolist() for s in scores]
