"""How a data-parallel train stage spreads the policy over its processes (`train.sharding`,
docs/architecture.md#scale-out): one registry, checked when the config loads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config checks these names without torch
    import torch


def replicate(model: torch.nn.Module) -> None:
    """A full copy in every process, as DDP: `spo.ppo.ppo_step` all-reduces the gradients in buckets."""


def shard_per_layer(model: torch.nn.Module) -> None:
    """FSDP2: parameters, gradients and optimizer state sharded per decoder layer, then the rest, for a model
    that does not fit one device; FSDP reduces its own gradients."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.get_decoder().layers:
        fully_shard(layer)
    fully_shard(model)


SHARDINGS: dict[str, Callable[[torch.nn.Module], None]] = {"ddp": replicate, "fsdp": shard_per_layer}
"""`train.sharding` -> what each process does to its copy of the policy before training."""
