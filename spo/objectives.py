"""Choices of the policy objective (docs/design.md#policy-loss-choices): how the per-token losses of an
optimizer batch become one number (`train.loss_agg`) and which importance ratio they use (`train.ratio`). One
registry per choice, checked when the config loads; spo/ppo.py and spo/losses.py apply them. Plain Python, so
that the config can check names without importing torch, and so that no stage's code fingerprint depends on
the loss through the config (as spo/schedules.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


def token_mean_weights(token_counts: Sequence[int], max_new_tokens: int) -> list[float]:
    """DAPO's token mean over the whole batch: every sequence weighs B / N (N the batch's masked tokens), so
    that the mean over sequences of the weighted sums is sum(loss) / N.

    >>> token_mean_weights([3, 1], max_new_tokens=8)  # 2 sequences, 4 tokens: 2 / 4
    [0.5, 0.5]
    """
    scale = len(token_counts) / max(sum(token_counts), 1)
    return [scale] * len(token_counts)


def token_sum_norm_weights(token_counts: Sequence[int], max_new_tokens: int) -> list[float]:
    """Dr. GRPO: each sequence's token sum divided by one constant, the response-length limit.

    >>> token_sum_norm_weights([3, 1], max_new_tokens=8)
    [0.125, 0.125]
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1 (sample.max_new_tokens), got {max_new_tokens}")
    return [1.0 / max_new_tokens] * len(token_counts)


def sequence_token_mean_weights(token_counts: Sequence[int], max_new_tokens: int) -> list[float]:
    """Each sequence's own token mean (a sequence without masked tokens adds 0 and still counts).

    >>> sequence_token_mean_weights([4, 1, 0], max_new_tokens=8)
    [0.25, 1.0, 1.0]
    """
    return [1.0 / max(n, 1) for n in token_counts]


@dataclass(frozen=True)
class LossAggregation:
    """How the per-token policy losses of one optimizer batch are aggregated (`train.loss_agg`)."""

    sequence_weights: Callable[[Sequence[int], int], list[float]] | None
    """(masked tokens of each of the batch's B sequences, `sample.max_new_tokens`) -> a weight w_b per
    sequence; the policy loss is then (1 / B) sum_b w_b sum_t loss_bt over the whole batch, whatever the
    micro-batches.
    None: the reference's token mean inside each micro-batch, micro-batches weighted by their sequences."""

    @property
    def batch_level(self) -> bool:
        """Weights come from the whole batch, so the update does not depend on `train.micro_batch_size`; the
        advantages must then not be whitened per micro-batch either."""
        return self.sequence_weights is not None


LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "reference": LossAggregation(None),
    "token_mean": LossAggregation(token_mean_weights),
    "seq_mean_token_sum_norm": LossAggregation(token_sum_norm_weights),
    "seq_mean_token_mean": LossAggregation(sequence_token_mean_weights),
}
"""`train.loss_agg`; names after verl's `loss_agg_mode` (docs/design.md#policy-loss-choices)."""


@dataclass(frozen=True)
class Ratio:
    """Which importance ratio the PPO-clip surrogate uses (`train.ratio`)."""

    per_sequence: bool
    """GSPO's sequence ratio s_i = exp(mean over the sequence's masked tokens of logp - old_logp), applied per
    token as sg[s_i] * exp(logp_t - sg[logp_t]) so that per-token advantages still work; False: PPO's
    per-token exp(logp_t - old_logp_t)."""


RATIOS: dict[str, Ratio] = {
    "token": Ratio(per_sequence=False),
    "sequence": Ratio(per_sequence=True),
}
"""`train.ratio`: PPO's per-token ratio (the reference) or GSPO's sequence ratio
(docs/design.md#policy-loss-choices)."""
