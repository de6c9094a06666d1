"""Where the train stage standardises advantages before the loss (`train.whiten`, docs/design.md#whitening):
one registry, checked when the config loads; spo/ppo.py applies it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Whitening:
    """One scope of advantage standardisation (docs/design.md#whitening)."""

    per_micro_batch: bool
    """Standardise inside each micro-batch, in `ppo_step` (the reference)."""
    per_epoch: bool
    """Standardise over all the episodes an epoch trains on, before they are batched (`epoch_episodes`)."""


WHITENING: dict[str, Whitening] = {
    "micro_batch": Whitening(per_micro_batch=True, per_epoch=False),
    "batch": Whitening(per_micro_batch=False, per_epoch=True),
    "none": Whitening(per_micro_batch=False, per_epoch=False),
}
"""`train.whiten`: inside each micro-batch (the reference), over the epoch's episodes, or not at all."""
