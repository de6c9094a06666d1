"""One PPO-clip optimizer step over a batch of episodes, with gradient accumulation.

The train stage owns the data, the schedule and the checkpoints; this file owns the arithmetic of a
step: pad the episodes of each micro-batch, recompute log-probs with gradients, whiten advantages in
the configured scope (`WHITENING`), take `spo.losses.policy_loss` with the configured aggregation and ratio
(`LOSS_AGGREGATIONS`, `RATIOS`), accumulate, clip and step (docs/design.md#loss,
docs/design.md#policy-loss-choices). Everything a step reads besides the model, the optimizer and the batch
is one `PPOSettings`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spo.losses import masked_whiten, policy_loss, value_loss
from spo.objectives import LOSS_AGGREGATIONS, RATIOS
from spo.policy.critic import state_values
from spo.policy.logprobs import is_fsdp, response_logprobs
from spo.whitening import WHITENING


@dataclass(frozen=True)
class Episode:
    """One training sample, as plain lists (one row of episodes.parquet plus its reference log-probs)."""

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    advantages: Sequence[float]
    mask: Sequence[bool]
    old_logp: Sequence[float]
    ref_logp: Sequence[float]


def pad_rows(rows: Sequence[Sequence[float]], width: int, value: float, dtype: torch.dtype) -> torch.Tensor:
    """Right-pad ragged rows into a (B, width) tensor."""
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(list(row), dtype=dtype)
    return out


def episode_order(n_available: int, n_wanted: int, rng: random.Random) -> list[int]:
    """Indices of the episodes to train on: shuffled, truncated or repeated to `n_wanted` (docs/design.md#question-sampling).

    `n_wanted = 0` keeps every episode once.

    >>> episode_order(3, 5, random.Random(0))
    [0, 2, 1, 0, 2]
    """
    order = list(range(n_available))
    rng.shuffle(order)
    if n_wanted == 0 or n_available == 0:
        return order
    repeats = -(-n_wanted // n_available)
    return (order * repeats)[:n_wanted]


def batch_whitened(episodes: Sequence[Episode]) -> list[list[float]]:
    """Advantages whitened over the masked tokens of all `episodes` together (scope "batch")."""
    width = max(len(e.response_ids) for e in episodes)
    adv = pad_rows([e.advantages for e in episodes], width, 0.0, torch.float32)  # (B, T)
    mask = pad_rows([e.mask for e in episodes], width, False, torch.bool)
    real = pad_rows([[True] * len(e.response_ids) for e in episodes], width, False, torch.bool)
    white = masked_whiten(adv, mask, fallback_mask=real)
    return [white[i, : len(e.response_ids)].tolist() for i, e in enumerate(episodes)]


@dataclass(frozen=True)
class PPOSettings:
    """What a PPO step reads besides the model, the optimizer and the batch (from `train.*`)."""

    micro_batch_size: int
    """Episodes per forward/backward pass; their losses accumulate into one step."""
    temperature: float
    """Sampling temperature: log-probs are recomputed at it (docs/design.md#probabilities)."""
    pad_id: int
    """The tokenizer's padding id."""
    clip: float
    """PPO ratio clip epsilon."""
    kl_coef: float
    """Weight of the k3 KL to the initial policy."""
    whiten: str
    """A key of `WHITENING`."""
    grad_clip: float
    """Global gradient-norm clip."""
    loss_agg: str = "reference"
    """A key of `LOSS_AGGREGATIONS`."""
    clip_high: float = 0.0
    """Upper ratio clip epsilon (DAPO's clip-higher); 0 means `clip`."""
    ratio: str = "token"
    """A key of `RATIOS`."""
    max_new_tokens: int = 0
    """The response-length limit (`sample.max_new_tokens`), Dr. GRPO's constant normaliser."""

    def __post_init__(self) -> None:
        for name, registry in (("whiten", WHITENING), ("loss_agg", LOSS_AGGREGATIONS), ("ratio", RATIOS)):
            if getattr(self, name) not in registry:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {sorted(registry)}")
        if LOSS_AGGREGATIONS[self.loss_agg].batch_level and WHITENING[self.whiten].per_micro_batch:
            raise ValueError(f"loss_agg {self.loss_agg!r} aggregates over the whole batch; whiten "
                             f"{self.whiten!r} would make the update depend on the micro-batches again")


def epoch_episodes(chosen: Sequence[Episode], settings: PPOSettings) -> list[Episode]:
    """The episodes an epoch trains on, their advantages whitened together when the scope says so."""
    if not WHITENING[settings.whiten].per_epoch or not chosen:
        return list(chosen)
    return [Episode(e.prompt_ids, e.response_ids, adv, e.mask, e.old_logp, e.ref_logp)
            for e, adv in zip(chosen, batch_whitened(chosen))]


def ppo_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Episode],
             settings: PPOSettings, rank: int = 0, world: int = 1) -> dict[str, float]:
    """Accumulate the loss of each micro-batch (each weighted by its share of the batch), clip, step.

    With `world` > 1 (data parallel, torch.distributed initialised), this process takes micro-batches
    rank, rank + world, ...; the gradients and the metrics are then summed over the processes, so the
    step is the single-process one up to the order of the additions. A model sharded with FSDP2 reduces
    its own gradients on the last local micro-batch, as an average, so its loss is scaled by `world`; a
    replicated one all-reduces them here.

    Args:
        batch: the episodes of one optimizer step (the same on every process), from `epoch_episodes`.

    Returns:
        The step's metrics: loss parts and diagnostics averaged over micro-batches, grad norm, counts.
    """
    s = settings
    device = next(model.parameters()).device
    names = ("loss", "loss_policy", "loss_kl", "ratio_mean", "clipfrac", "approx_kl", "tokens")
    sums = dict.fromkeys(names, 0.0)
    sharded = is_fsdp(model)
    aggregation = LOSS_AGGREGATIONS[s.loss_agg]
    weights = None  # (B,): from the whole batch before it is split, so micro-batching cannot change the update
    if aggregation.batch_level:
        weights = torch.tensor(aggregation.sequence_weights([sum(e.mask) for e in batch], s.max_new_tokens),
                               dtype=torch.float32, device=device)
    starts = range(0, len(batch), s.micro_batch_size)
    mine = starts[rank::world]
    optimizer.zero_grad(set_to_none=True)
    for k, start in enumerate(mine):
        micro = batch[start : start + s.micro_batch_size]
        if sharded:
            model.set_requires_gradient_sync(k == len(mine) - 1)
        logp, real = response_logprobs(
            model, [e.prompt_ids for e in micro], [e.response_ids for e in micro], s.temperature, s.pad_id
        )  # (B, T), (B, T)
        width = logp.shape[1]
        mask = pad_rows([e.mask for e in micro], width, False, torch.bool).to(device)
        adv = pad_rows([e.advantages for e in micro], width, 0.0, torch.float32).to(device)
        if WHITENING[s.whiten].per_micro_batch:
            adv = masked_whiten(adv, mask, fallback_mask=real)
        old = pad_rows([e.old_logp for e in micro], width, 0.0, torch.float32).to(device)
        ref = pad_rows([e.ref_logp for e in micro], width, 0.0, torch.float32).to(device)
        out = policy_loss(logp, old, ref, adv, mask, clip=s.clip, kl_coef=s.kl_coef, clip_high=s.clip_high,
                          sequence_ratio=RATIOS[s.ratio].per_sequence,
                          sequence_weights=None if weights is None else weights[start : start + len(micro)])
        share = len(micro) / len(batch)
        (out.total * share * (world if sharded else 1)).backward()
        for name, value in (("loss", out.total), ("loss_policy", out.policy), ("loss_kl", out.kl),
                            ("ratio_mean", out.ratio_mean), ("clipfrac", out.clip_fraction),
                            ("approx_kl", out.approx_kl)):
            sums[name] += float(value.detach()) * share
        sums["tokens"] += int(mask.sum())
    if world > 1:
        sums = _summed_over_processes(model, sums, device, gradients=not sharded)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
    optimizer.step()
    return {**sums, "tokens": int(sums["tokens"]), "grad_norm": float(grad_norm), "sequences": len(batch)}


GRADIENT_BUCKET = 1 << 24
"""Values per gradient all-reduce (64 MB of float32), as DDP's buckets: few collectives, bounded extra memory."""


def _summed_over_processes(model: torch.nn.Module, sums: dict[str, float], device: torch.device,
                           gradients: bool) -> dict[str, float]:
    """Sum the metrics (and, for a replicated model, every gradient) over the data-parallel processes; the
    gradients go in flat buckets of up to GRADIENT_BUCKET values, one collective each, not one per tensor."""
    import torch.distributed as dist

    if gradients:
        for parameter in model.parameters():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        for bucket in _buckets([p.grad for p in model.parameters()], GRADIENT_BUCKET):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(part.view_as(g))
    values = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(sums, values.tolist()))


def _buckets(tensors: list[torch.Tensor], limit: int):
    """Consecutive runs of tensors of one dtype with at most `limit` values together (a larger one alone).

    >>> [[t.numel() for t in b] for b in _buckets([torch.zeros(3), torch.zeros(2), torch.zeros(9)], limit=5)]
    [[3, 2], [9]]
    """
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if bucket and (tensor.dtype != bucket[0].dtype or size + tensor.numel() > limit):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


@dataclass(frozen=True)
class CriticEpisode:
    """One critic training sample: a response, the values its advantages came from, its returns, its mask."""

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    old_values: Sequence[float]
    returns: Sequence[float]
    mask: Sequence[bool]


def critic_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[CriticEpisode],
    micro_batch_size: int,
    pad_id: int,
    clip: float,
    grad_clip: float,
) -> dict[str, float]:
    """One optimizer step of the critic on the clipped value loss, accumulated over micro-batches."""
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    total, tokens = 0.0, 0
    for start in range(0, len(batch), micro_batch_size):
        micro = batch[start : start + micro_batch_size]
        values, real = state_values(model, [e.prompt_ids for e in micro], [e.response_ids for e in micro], pad_id)
        width = values.shape[1]
        old = pad_rows([e.old_values for e in micro], width, 0.0, torch.float32).to(device)
        returns = pad_rows([e.returns for e in micro], width, 0.0, torch.float32).to(device)
        mask = pad_rows([e.mask for e in micro], width, False, torch.bool).to(device) & real
        loss = value_loss(values, old, returns, mask, clip)
        share = len(micro) / len(batch)
        (loss * share).backward()
        total += float(loss.detach()) * share
        tokens += int(mask.sum())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {"loss": total, "grad_norm": float(grad_norm), "sequences": len(batch), "tokens": tokens}
