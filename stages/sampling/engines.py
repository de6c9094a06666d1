"""The policy a stage samples or trains with: loaded fresh, or taken from the live engines of a flow run.

Loading a model costs seconds to minutes at real size, and a policy iteration samples with the same
engine three times (generate, resample, evaluate) and trains against a frozen reference that never
changes. A flow run therefore opens an `engine_pool()`: within it, each role keeps one live engine,
and a stage that needs another checkpoint reloads the weights in place instead of building a new
engine. The pool is scoped to the `with` block (a context variable the flow sets and resets), never
a module global; a stage run alone (`spo stage`) loads fresh, with the same result
(docs/architecture.md#engines). The seconds spent loading are reported by every stage
(`engine/load_seconds`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from spo.config import RunConfig
from spo.policy import Engine, make_engine
from spo.policy.device import resolve_device
from spo.policy.transformers_engine import train_dtype
from stages.runtime import write_behind
from stages.runtime.load_seconds import record_load

ROLES = ("sampler", "trainer", "reference")
"""sampler: `model.engine`, samples and scores; trainer: the transformers module the train stage updates;
reference: the frozen initial policy of the KL term."""


class EnginePool:
    """One live engine per role; `get` reloads another checkpoint's weights into it in place.

    The trainer's weights change while it trains: `get` forgets which checkpoint they were, and the train
    stage tells the pool (`saved`) which checkpoint they became, with the optimizer that trained them, so
    the next iteration continues from memory instead of reading both back from disk.
    """

    def __init__(self) -> None:
        self._live: dict[str, tuple[Engine, Path | None]] = {}
        self._optimizers: dict[str, tuple[object, Path, int]] = {}
        self.builds: dict[str, int] = dict.fromkeys(ROLES, 0)
        """Engines built per role (each built once per pool; later checkpoints are reloaded in place)."""

    def get(self, role: str, path: Path, build) -> tuple[Engine, bool]:
        """The role's engine holding the weights at `path`, and whether it was built or reloaded (True)
        rather than reused as it was."""
        engine, loaded = self._live.get(role, (None, None))
        changed = engine is None or loaded != path
        if changed:
            write_behind.wait(path)  # it reads the files
        if engine is None:
            engine = build()
            self.builds[role] += 1
        elif changed:
            engine.reload(path)
        if changed:
            self._optimizers.pop(role, None)
        self._live[role] = (engine, None if role == "trainer" else path)  # the trainer's are about to change
        return engine, changed

    def saved(self, role: str, engine: Engine, path: Path, optimizer=None, state: Path | None = None,
              step: int = 0) -> None:
        """The role's live engine now holds the weights saved at `path` (and `optimizer`, at global step `step`,
        the state saved, or left unwritten, at `state`).

        A live transformers sampler takes the new weights from memory rather than from disk: the next
        sampling stage samples the checkpoint just written without reading it back.
        """
        if self._live.get(role, (None,))[0] is not engine:
            return
        self._live[role] = (engine, path)
        if optimizer is not None:
            self._optimizers[role] = (optimizer, state, step)
        sampler = self._live.get("sampler", (None,))[0]
        if role == "trainer" and hasattr(sampler, "model") and hasattr(engine, "model"):
            sampler.model.load_state_dict(engine.model.state_dict())  # cast to the sampler's dtype, as a load
            self._live["sampler"] = (sampler, path)

    def optimizer(self, role: str, state: Path) -> tuple[object, int] | None:
        """The live optimizer whose state was saved at `state` and its global step, if the pool holds it."""
        optimizer, saved, step = self._optimizers.pop(role, (None, None, 0))
        return (optimizer, step) if optimizer is not None and saved == state else None

    def close(self) -> None:
        for engine, _ in self._live.values():
            engine.close()
        self._live.clear()
        self._optimizers.clear()


_POOL: ContextVar[EnginePool | None] = ContextVar("spo_engine_pool", default=None)


@contextmanager
def engine_pool() -> Iterator[EnginePool]:
    """Share live engines between the stages run inside the block; close them at its end."""
    pool = EnginePool()
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)
        pool.close()


def load_policy(path: Path, cfg: RunConfig, role: str = "sampler") -> Engine:
    """The policy saved at `path` in the engine of `role` (`ROLES`): from the open pool, or built fresh.

    The sampler uses `model.engine` in `model.dtype`; the trainer and the reference use the transformers
    engine, whose torch module the trainer updates (vLLM only samples). The trainer's weights are float32:
    AdamW steps of lr 1e-6 are below bfloat16's resolution and would round away (under `train.precision`
    bf16 it computes in bfloat16 under autocast, and the reference is loaded in bfloat16,
    docs/design.md#optimizer).
    """
    start = time.perf_counter()
    pool = _POOL.get()
    build = functools.partial(build_engine, path, cfg, role)
    engine = build() if pool is None else pool.get(role, Path(path), build)[0]
    record_load(time.perf_counter() - start)
    return engine


def build_engine(path: Path, cfg: RunConfig, role: str = "sampler") -> Engine:
    """A new engine of `role` (`ROLES`) holding the policy saved at `path` (`load_policy` says which)."""
    if role not in ROLES:
        raise ValueError(f"unknown engine role {role!r}; choose one of {list(ROLES)}")
    kind, dtype = (cfg.model.engine, cfg.model.dtype) if role == "sampler" else ("transformers", "float32")
    if role == "reference" and train_dtype(cfg.train.precision, cfg.model.dtype,
                                           resolve_device(cfg.model.device)) == torch.bfloat16:
        dtype = "bfloat16"  # no optimizer steps to lose, and half the memory
    options = cfg.model.vllm_options if kind == "vllm" else {}
    return make_engine(kind, path, dtype=dtype, device=cfg.model.device, **options)


def saved(role: str, engine: Engine, path: Path, optimizer=None, state: Path | None = None, step: int = 0) -> None:
    """Tell the open pool (if any) that `engine` now holds the weights saved at `path` (see `EnginePool`)."""
    pool = _POOL.get()
    if pool is not None:
        pool.saved(role, engine, Path(path), optimizer, None if state is None else Path(state), step)


def live_optimizer(role: str, state: Path | None) -> tuple[object, int] | None:
    """The open pool's optimizer of `role` whose state was saved at `state`, and its global step (None: build
    and load one)."""
    pool = _POOL.get()
    return None if pool is None or state is None else pool.optimizer(role, Path(state))
