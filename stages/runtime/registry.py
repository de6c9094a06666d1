"""Which stages make a run: name -> (function, spec), per algorithm, chosen once from `RunConfig.algorithm`.

SPO-chain and its baselines (GRPO, RLOO, PPO, fixed chunks, VinePPO steps) share one chain and differ only
in the partition and advantage config; SPO-tree grows one artifact per tree depth.
"""

from __future__ import annotations

from collections.abc import Callable

from spo.advantages import ADVANTAGES
from spo.algorithms import ALGORITHMS
from spo.config import RunConfig
from spo.tasks import TASKS
from stages import (
    advantages,
    credit,
    critic_init,
    critic_train,
    critic_values,
    evaluate,
    generate,
    partition,
    prompts,
    resample,
    train,
    tree,
    tree_advantages,
    warmstart,
)
from stages.runtime.artifacts import StageSpec, is_finished, manifest_path
from stages.runtime.run_dir import RunDir

Stage = tuple[Callable, StageSpec]

COMMON: dict[str, Stage] = {
    "warmstart": (warmstart.warmstart, warmstart.SPEC),
    "evaluate": (evaluate.evaluate, evaluate.SPEC),
}
"""Stages outside the iteration chain: checkpoint 0, and the evaluation of a checkpoint."""


def probe_stages(cfg: RunConfig) -> dict[str, Stage]:
    """The credit probe, on tasks whose correct response is unique (docs/design.md#credit-probe)."""
    unique = getattr(TASKS.get(cfg.task.name), "unique_target", False)
    return {"credit": (credit.credit, credit.SPEC)} if unique else {}


def chain_stages(cfg: RunConfig) -> dict[str, Stage]:
    """SPO-chain and its baselines: the partition and MC values only where the advantage method reads values,
    PPO's critic only where it reads a critic."""
    method = ADVANTAGES[cfg.advantage.method]
    valued = [partition, resample] if method.uses_values else []
    stages = {m.SPEC.name: (getattr(m, m.SPEC.name), m.SPEC) for m in (prompts, generate, *valued)}
    if method.uses_critic:
        stages["critic-values"] = (critic_values.critic_values, critic_values.SPEC)
    stages.update({"advantages": (advantages.advantages, advantages.SPEC), **probe_stages(cfg),
                   "train": (train.train, train.SPEC)})
    if method.uses_critic:
        stages["critic-train"] = (critic_train.critic_train, critic_train.SPEC)
    return stages


def tree_stages(cfg: RunConfig) -> dict[str, Stage]:
    depth = len(cfg.tree.branching)
    levels = {tree.level_spec(d).name: (tree.grow_level(d), tree.level_spec(d)) for d in range(1, depth + 1)}
    return {"prompts": (prompts.prompts, prompts.SPEC), **levels,
            "tree-advantages": (tree_advantages.tree_advantages, tree_advantages.spec(depth)),
            **probe_stages(cfg), "train": (train.train, train.SPEC)}


PIPELINES: dict[str, Callable[[RunConfig], dict[str, Stage]]] = {"spo-chain": chain_stages, "spo-tree": tree_stages}
"""The stages of each algorithm of `spo.algorithms.ALGORITHMS` (the registry the config checks)."""
if set(PIPELINES) != set(ALGORITHMS):
    raise RuntimeError(f"stages/runtime/registry.py: pipelines {sorted(PIPELINES)} != algorithms {sorted(ALGORITHMS)}")


def iteration_stages(cfg: RunConfig) -> dict[str, Stage]:
    """The stages of one policy iteration, in order."""
    return PIPELINES[cfg.algorithm](cfg)


def start_stages(cfg: RunConfig) -> dict[str, Stage]:
    """The stages that make checkpoint 0 (and PPO's initial critic), before the first iteration."""
    initial = {"warmstart": COMMON["warmstart"]}
    if ADVANTAGES[cfg.advantage.method].uses_critic:
        initial["critic-init"] = (critic_init.critic_init, critic_init.SPEC)
    return initial


def run_stages(cfg: RunConfig) -> dict[str, Stage]:
    """Every stage of a run with this config, by name."""
    return {**COMMON, **start_stages(cfg), **iteration_stages(cfg)}


def find_stage(name: str, cfg: RunConfig) -> Stage:
    """A stage of this run by name; an unknown name lists the valid ones."""
    stages = run_stages(cfg)
    if name not in stages:
        raise ValueError(f"unknown stage {name!r} for algorithm {cfg.algorithm!r}; choose one of {sorted(stages)}")
    return stages[name]


def trained_iterations(run: RunDir, cfg: RunConfig) -> int:
    """Iterations trained so far: the newest checkpoint whose iteration's last stage wrote every manifest."""
    _, last_stage = list(iteration_stages(cfg).values())[-1]
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
    plan = [[*((name, 0) for name in start_stages(cfg)), ("evaluate", 0)]]
    for i in iterations:
        step = [(name, i) for name in iteration_stages(cfg)]
        if (i + 1) % cfg.eval.every == 0 or i + 1 == iterations.stop:
            step.append(("evaluate", i + 1))
        plan.append(step)
    return plan


def unfinished_stages(run: RunDir) -> list[tuple[str, int]]:
    """The (stage, iteration) pairs of the whole run whose outputs are not finished under their current key."""
    cfg = run.config()
    stages = run_stages(cfg)
    return [(name, i) for step in flow_plan(cfg, range(cfg.iterations)) for name, i in step
            if not is_finished(stages[name][1], run, i)]
