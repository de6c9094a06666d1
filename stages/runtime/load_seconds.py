"""The seconds a stage spends loading engines (its `engine/load_seconds`), collected per block.

Its own module, free of torch, so that the artifact layer that reports it (stages/runtime/artifacts.py) loads
without the engines: `spo inspect`, `gc`, `verify` and the parent of `spo compare` never import torch for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_LOAD_SECONDS: ContextVar[list[float] | None] = ContextVar("spo_engine_load_seconds", default=None)


@contextmanager
def load_timer() -> Iterator[list[float]]:
    """Collect the seconds `record_load` is given inside the block."""
    seconds: list[float] = []
    token = _LOAD_SECONDS.set(seconds)
    try:
        yield seconds
    finally:
        _LOAD_SECONDS.reset(token)


def record_load(seconds: float) -> None:
    """Count one engine load of `seconds` toward the enclosing `load_timer` (none: nothing to count)."""
    timer = _LOAD_SECONDS.get()
    if timer is not None:
        timer.append(seconds)
