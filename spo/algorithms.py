"""How a run samples (`algorithm`): the one registry of algorithms and the settings each needs.

The stages each algorithm runs, in order, are in stages/runtime/registry.py (`PIPELINES`, keyed by these names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spo.config import RunConfig


def _chain_problems(cfg: RunConfig) -> list[str]:
    from spo.advantages import ADVANTAGES

    method = ADVANTAGES[cfg.advantage.method]
    if method.uses_values and cfg.partition.method == "none":
        return [(f"advantage.method = {cfg.advantage.method!r} needs boundary values, but partition.method = "
                 f"'none' cuts nothing: every advantage would be 0; choose a partition")]
    if not method.uses_values and cfg.partition.method != "none":
        return [(f"advantage.method = {cfg.advantage.method!r} reads no values, but partition.method = "
                 f"{cfg.partition.method!r} would sample MC continuations for nothing; set partition.method = 'none'")]
    return []


def _tree_problems(cfg: RunConfig) -> list[str]:
    problems = []
    if cfg.partition.method != "fixed_length":
        problems.append(f"algorithm = 'spo-tree' grows levels of partition.segment_tokens tokens, so "
                        f"partition.method must be 'fixed_length', got {cfg.partition.method!r}")
    if cfg.sample.dynamic_sampling:
        problems.append("sample.dynamic_sampling = True: expected false with algorithm = 'spo-tree', which "
                        "grows trees, not groups of rollouts to drop")
    if cfg.sample.overlong_buffer:
        problems.append(f"sample.overlong_buffer = {cfg.sample.overlong_buffer}: expected 0 with algorithm = "
                        f"'spo-tree', whose responses have no one length limit (each level has its own budget)")
    return problems


@dataclass(frozen=True)
class Algorithm:
    """One way to sample and credit a run."""

    description: str
    problems: Callable[[RunConfig], list[str]]
    """Settings this algorithm cannot run with (its advantage method is checked against it by the config)."""
    reads: tuple[str, ...] = ()
    """Config fields (or sections) that only some algorithms read and this one does; one set for an algorithm
    that does not read it is refused (`spo.config.unread_fields`)."""


ALGORITHMS: dict[str, Algorithm] = {
    "spo-chain": Algorithm("rollouts cut into segments at cutpoints, valued by MC continuations (also GRPO, RLOO, "
                           "PPO and the partition baselines, by partition and advantage)", _chain_problems),
    "spo-tree": Algorithm("trees of fixed-length segments whose siblings share their prefix", _tree_problems,
                          reads=("tree",)),
}
