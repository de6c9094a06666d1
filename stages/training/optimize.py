"""The optimizer loop every train stage runs (the policy's PPO, PPO's critic): seeded epochs over the
iteration's episodes, AdamW under the warm-up and `train.lr_schedule` (docs/design.md#optimizer), and the
optimizer state a later iteration continues from."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from spo.ppo import episode_order
from spo.schedules import LR_SCHEDULES
from spo.seeds import derive_seed
from stages.runtime.artifacts import StageContext
from stages.runtime.progress import progress_bar


def steps_per_iteration(episodes: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(episodes / batch_size)


class Update(Protocol):
    """What `optimize` steps: the policy's PPO (`PolicyUpdate`) or PPO's critic (stages/critic_train.py)."""

    model: torch.nn.Module
    lr: float
    name: str

    def epoch(self, chosen: list) -> list: ...

    def step(self, optimizer: torch.optim.Optimizer, batch: list) -> dict: ...


def optimize(ctx: StageContext, update: Update, episodes: list, state: Path | None,
             resume: tuple[torch.optim.Optimizer, int] | None = None,
             load_state: Callable | None = None) -> tuple[list[dict], torch.optim.Optimizer, int]:
    """`train.epochs` passes over the episodes in seeded order (truncated or repeated to
    `train.episodes_per_iteration`), `update.step(optimizer, batch)` per batch under the warm-up and
    `train.lr_schedule` of peak `update.lr`, AdamW continued from `resume` (an optimizer and its global
    step) or from `state` (through `load_state(state, model, optimizer)` where given). Returns the per-step
    metrics, the optimizer and the global step."""
    model, lr, name = update.model, update.lr, update.name
    cfg, t = ctx.cfg, ctx.cfg.train
    rng = random.Random(derive_seed(cfg.seed, ctx.iteration, name, "order"))
    wanted = t.episodes_per_iteration
    # the horizon in force at this iteration: an extended run decays towards its new end (docs/design.md#optimizer)
    total_steps = max(cfg.iterations * steps_per_iteration(wanted or len(episodes), t.batch_size, t.epochs), 1)
    warmup = min(math.ceil(t.warmup_ratio * total_steps), total_steps - 1)
    if resume is not None:
        optimizer, global_step = resume
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=t.adam_betas, eps=1e-8,
                                      weight_decay=t.weight_decay)
        global_step = 0 if state is None else (load_state or load_optimizer_state)(state, model, optimizer)
    schedule = LR_SCHEDULES[t.lr_schedule]
    model.train()
    metrics = []
    n_steps = steps_per_iteration((wanted or len(episodes)) if episodes else 0, t.batch_size, t.epochs)
    with progress_bar(n_steps, f"{name} {ctx.iteration:04d}") as bar:
        for epoch in range(t.epochs):
            chosen = update.epoch([episodes[i] for i in episode_order(len(episodes), wanted, rng)])
            for start in range(0, len(chosen), t.batch_size):
                step_lr = lr * schedule(min(global_step, total_steps - 1), total_steps, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                out = update.step(optimizer, chosen[start : start + t.batch_size])
                global_step += 1
                metrics.append({"step": global_step, "epoch": epoch, "lr": step_lr, **out})
                bar.update(1)
    model.eval()
    return metrics, optimizer, global_step


def save_optimizer_state(folder: Path, state: dict, global_step: int) -> None:
    """Write the AdamW state (an `optimizer.state_dict()`) and the global step the next iteration continues from."""
    folder.mkdir(parents=True)
    torch.save(state, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": global_step}))


def load_optimizer_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore the AdamW state of a previous train stage; return the global step it continues from."""
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return saved_step(folder)


def saved_step(folder: Path) -> int:
    """The global step an optimizer state was saved at."""
    return json.loads((folder / "trainer_state.json").read_text())["step"]
