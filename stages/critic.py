"""PPO's critic as stages (`advantage.method = "gae"`, docs/design.md#baselines).

- `critic-init`: checkpoint 0's decoder with a new value head, `checkpoints/0000-critic/`.
- `critic-values`: the critic of iteration i values the state before every token of the iteration's
  rollouts (`critic_values.parquet`); the advantages stage turns them into GAE advantages.
- `critic-train`: the clipped value loss on the iteration's episodes, returns = advantage + value, with
  the policy's batches and schedule; writes the critic of iteration i + 1 and its optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.critic_metrics import CRITIC_METRICS
from schemas.critic_values import CRITIC_VALUES
from spo.policy.critic import create_critic, load_critic, score_states
from spo.policy.transformers_engine import resolve_device
from spo.ppo import CriticEpisode, critic_step
from spo.seeds import derive_seed
from stages.artifacts import StageContext, StageReport, StageSpec, execute
from stages.resources import load_tokenizer, write_folder_atomic
from stages.run_dir import RunDir
from stages.train import optimize, save_optimizer_state

INIT = StageSpec(
    name="critic-init",
    module=__name__,
    reads=lambda run, i: [run.checkpoint(0)],
    writes=lambda run, i: [run.critic(0)],
    config=(),
)
VALUES = StageSpec(
    name="critic-values",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "rollouts"), run.critic(i), run.tokenizer()],
    writes=lambda run, i: [run.artifact(i, "critic_values")],
    config=(),
)
TRAIN = StageSpec(
    name="critic-train",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "episodes"), run.artifact(i, "critic_values"), run.critic(i),
                          run.tokenizer(), *([run.critic_optimizer_state(i)] if i > 0 else [])],
    writes=lambda run, i: [run.critic(i + 1), run.critic_optimizer_state(i + 1), run.artifact(i, "critic_metrics")],
    config=("critic", "train"),
)


def critic_init(run: Path, iteration: int = 0, force: bool = False) -> StageReport:
    """The initial critic: checkpoint 0 with a seeded value head."""
    return execute(INIT, RunDir(Path(run)), 0, _init, force)


def critic_values(run: Path, iteration: int, force: bool = False) -> StageReport:
    """The critic's value of the state before every token of the iteration's rollouts."""
    return execute(VALUES, RunDir(Path(run)), iteration, _values, force)


def critic_train(run: Path, iteration: int, force: bool = False) -> StageReport:
    """One iteration of the critic's clipped value loss."""
    return execute(TRAIN, RunDir(Path(run)), iteration, _train, force)


def _init(ctx: StageContext):
    model = create_critic(ctx.run.checkpoint(0), seed=derive_seed(ctx.cfg.seed, 0, "critic-init", "head") % 2**31)
    write_folder_atomic(ctx.output("0000-critic"), model.save_pretrained, staged=ctx.staged)
    return {}, {"critic/parameters": sum(p.numel() for p in model.parameters())}


def _values(ctx: StageContext):
    rollouts = ctx.read("rollouts").select(["rollout_id", "prompt_ids", "response_ids"]).to_pylist()
    model = load_critic(ctx.run.critic(ctx.iteration), resolve_device(ctx.cfg.model.device)).eval()
    pad_id = load_tokenizer(ctx.run.tokenizer()).pad_token_id
    values = score_states(model, [r["prompt_ids"] for r in rollouts], [r["response_ids"] for r in rollouts], pad_id)
    rows = [{"rollout_id": r["rollout_id"], "values": v.tolist()} for r, v in zip(rollouts, values)]
    flat = np.concatenate(values) if values else np.zeros(0)
    return {"critic_values": pa.Table.from_pylist(rows, schema=CRITIC_VALUES)}, {
        "critic/value_mean": float(flat.mean()) if flat.size else 0.0}


@dataclass
class CriticUpdate:
    """The critic's clipped value loss, as `stages.train.optimize` runs it (the policy's batches and schedule)."""

    model: torch.nn.Module
    lr: float
    micro_batch_size: int
    pad_id: int
    value_clip: float
    grad_clip: float
    name: str = "critic-train"

    def epoch(self, chosen: list[CriticEpisode]) -> list[CriticEpisode]:
        return chosen

    def step(self, optimizer: torch.optim.Optimizer, batch: list[CriticEpisode]) -> dict:
        return critic_step(self.model, optimizer, batch, self.micro_batch_size, self.pad_id, self.value_clip,
                           self.grad_clip)


def _train(ctx: StageContext):
    cfg = ctx.cfg
    values = {r["rollout_id"]: r["values"] for r in ctx.read("critic_values").to_pylist()}
    episodes = []
    for e in ctx.read("episodes").to_pylist():
        old = values[int(e["source_id"])]
        returns = [a + v for a, v in zip(e["advantages"], old)]  # GAE advantage + the value it came from
        episodes.append(CriticEpisode(e["prompt_ids"], e["response_ids"], old, returns, e["mask"]))
    model = load_critic(ctx.run.critic(ctx.iteration), resolve_device(cfg.model.device))
    pad_id = load_tokenizer(ctx.run.tokenizer()).pad_token_id

    update = CriticUpdate(model, cfg.critic.lr, cfg.train.micro_batch_size, pad_id, cfg.critic.value_clip,
                          cfg.train.grad_clip)
    state = ctx.run.critic_optimizer_state(ctx.iteration) if ctx.iteration > 0 else None
    metrics, optimizer, global_step = optimize(ctx, update, episodes, state)
    write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}-critic"), model.save_pretrained, staged=ctx.staged)
    write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}-critic-optimizer"),
                        lambda folder: save_optimizer_state(folder, optimizer.state_dict(), global_step), staged=ctx.staged)
    return {"critic_metrics": pa.Table.from_pylist(metrics, schema=CRITIC_METRICS)}, {
        "critic/steps": len(metrics), "loss/value": metrics[-1]["loss"] if metrics else 0.0}
