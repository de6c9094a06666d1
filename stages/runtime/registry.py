"""Which stages make a run: name -> (function, spec), per algorithm, chosen once from `RunConfig.algorithm`.

SPO-chain and its baselines (GRPO, RLOO, PPO, fixed chunks, VinePPO steps) share one chain and differ only
in the partition and advantage config; SPO-tree grows one artifact per tree depth. The tables hold each
stage's name and where its code is; a stage's module (torch and all) is imported only when the stage is
asked for, so the order of a run's stages (`flow_plan`, which the memory plan reads) costs no imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from spo.advantages import ADVANTAGES
from spo.algorithms import ALGORITHMS
from spo.config import RunConfig
from spo.tasks import TASKS
from stages.runtime.run_dir import RunDir

if TYPE_CHECKING:
    from stages.runtime.artifacts import StageSpec

Stage = tuple[Callable, "StageSpec"]
Load = Callable[[], Stage]
"""Imports a stage's module and returns its function and spec."""


def _stage(module: str) -> Load:
    """The stage of `stages/<module>.py`: its function of the module's name and its `SPEC`."""

    def load() -> Stage:
        stage = importlib.import_module(f"stages.{module}")
        return getattr(stage, module), stage.SPEC

    return load


def tree_level(depth: int) -> str:
    """The name of the stage that grows depth `depth` of SPO-tree's trees (`stages.tree.level_spec`)."""
    return f"tree-{depth}"


def _tree_level(depth: int) -> Load:
    def load() -> Stage:
        tree = importlib.import_module("stages.tree")
        return tree.grow_level(depth), tree.level_spec(depth)

    return load


def _tree_advantages(depth: int) -> Load:
    def load() -> Stage:
        stage = importlib.import_module("stages.tree_advantages")
        return stage.tree_advantages, stage.spec(depth)

    return load


COMMON: dict[str, Load] = {"warmstart": _stage("warmstart"), "evaluate": _stage("evaluate")}
"""Stages outside the iteration chain: checkpoint 0, and the evaluation of a checkpoint."""


def probe_stages(cfg: RunConfig) -> dict[str, Load]:
    """The credit probe, on tasks whose correct response is unique (docs/design.md#credit-probe)."""
    unique = getattr(TASKS.get(cfg.task.name), "unique_target", False)
    return {"credit": _stage("credit")} if unique else {}


def chain_stages(cfg: RunConfig) -> dict[str, Load]:
    """SPO-chain and its baselines: the partition and MC values only where the advantage method reads values,
    PPO's critic only where it reads a critic."""
    method = ADVANTAGES[cfg.advantage.method]
    valued = ["partition", "resample"] if method.uses_values else []
    stages = {name: _stage(name) for name in ("prompts", "generate", *valued)}
    if method.uses_critic:
        stages["critic-values"] = _stage("critic_values")
    stages.update({"advantages": _stage("advantages"), **probe_stages(cfg), "train": _stage("train")})
    if method.uses_critic:
        stages["critic-train"] = _stage("critic_train")
    return stages


def tree_stages(cfg: RunConfig) -> dict[str, Load]:
    depth = len(cfg.tree.branching)
    levels = {tree_level(d): _tree_level(d) for d in range(1, depth + 1)}
    return {"prompts": _stage("prompts"), **levels, "tree-advantages": _tree_advantages(depth),
            **probe_stages(cfg), "train": _stage("train")}


PIPELINES: dict[str, Callable[[RunConfig], dict[str, Load]]] = {"spo-chain": chain_stages, "spo-tree": tree_stages}
"""The stages of each algorithm of `spo.algorithms.ALGORITHMS` (the registry the config checks)."""
if set(PIPELINES) != set(ALGORITHMS):
    raise RuntimeError(f"stages/runtime/registry.py: pipelines {sorted(PIPELINES)} != algorithms {sorted(ALGORITHMS)}")


def _loaded(stages: dict[str, Load]) -> dict[str, Stage]:
    """Each stage's function and spec, its module imported (a spec named otherwise than its entry is refused)."""
    loaded = {name: load() for name, load in stages.items()}
    for name, (_, spec) in loaded.items():
        if spec.name != name:
            raise RuntimeError(f"stages/runtime/registry.py: the entry {name!r} loads the stage {spec.name!r} "
                               f"of {spec.module}")
    return loaded


def _start_entries(cfg: RunConfig) -> dict[str, Load]:
    initial = {"warmstart": COMMON["warmstart"]}
    if ADVANTAGES[cfg.advantage.method].uses_critic:
        initial["critic-init"] = _stage("critic_init")
    return initial


def _run_entries(cfg: RunConfig) -> dict[str, Load]:
    return {**COMMON, **_start_entries(cfg), **PIPELINES[cfg.algorithm](cfg)}


def iteration_stages(cfg: RunConfig) -> dict[str, Stage]:
    """The stages of one policy iteration, in order."""
    return _loaded(PIPELINES[cfg.algorithm](cfg))


def start_stages(cfg: RunConfig) -> dict[str, Stage]:
    """The stages that make checkpoint 0 (and PPO's initial critic), before the first iteration."""
    return _loaded(_start_entries(cfg))


def run_stages(cfg: RunConfig) -> dict[str, Stage]:
    """Every stage of a run with this config, by name."""
    return _loaded(_run_entries(cfg))


def find_stage(name: str, cfg: RunConfig) -> Stage:
    """A stage of this run by name; an unknown name lists the valid ones. Imports that stage's module only."""
    stages = _run_entries(cfg)
    if name not in stages:
        raise ValueError(f"unknown stage {name!r} for algorithm {cfg.algorithm!r}; choose one of {sorted(stages)}")
    return _loaded({name: stages[name]})[name]


def trained_iterations(run: RunDir, cfg: RunConfig) -> int:
    """Iterations trained so far: the newest checkpoint whose iteration's last stage wrote every manifest."""
    from stages.runtime.artifacts import manifest_path

    last = list(PIPELINES[cfg.algorithm](cfg))[-1]
    _, last_stage = find_stage(last, cfg)
    for index in reversed(run.checkpoints()):
        if index == 0 or all(manifest_path(p).is_file() for p in last_stage.writes(run, index - 1)):
            return index
    return 0


def iteration_range(run: RunDir, cfg: RunConfig, until: int | None, more: int | None) -> range:
    """Iterations a flow run covers: from 0 up to `until`, or `more` after the trained ones (capped at
    `cfg.iterations`, the horizon of the learning-rate schedule)."""
    if more is None:
        return range(cfg.iterations if until is None else until)
    if until is not None or more < 1:
        raise ValueError(f"expected either `until` or `more` >= 1, got until={until}, more={more}")
    start = trained_iterations(run, cfg)
    return range(start, min(start + more, cfg.iterations))


def flow_plan(cfg: RunConfig, iterations: range) -> list[list[tuple[str, int]]]:
    """The (stage, iteration) pairs the run flow runs, in order, one list per logged step: the warm start
    with the evaluation of checkpoint 0, then each iteration's stages with the evaluation of the checkpoint
    it makes every `eval.every` iterations and after the last."""
    plan = [[*((name, 0) for name in _start_entries(cfg)), ("evaluate", 0)]]
    names = list(PIPELINES[cfg.algorithm](cfg))
    for i in iterations:
        step = [(name, i) for name in names]
        if (i + 1) % cfg.eval.every == 0 or i + 1 == iterations.stop:
            step.append(("evaluate", i + 1))
        plan.append(step)
    return plan


def unfinished_stages(run: RunDir) -> list[tuple[str, int]]:
    """The (stage, iteration) pairs of the whole run whose outputs are not finished under their current key."""
    from stages.runtime.artifacts import is_finished

    cfg = run.config()
    stages = run_stages(cfg)
    return [(name, i) for step in flow_plan(cfg, range(cfg.iterations)) for name, i in step
            if not is_finished(stages[name][1], run, i)]
