"""Stage `critic-train`: the clipped value loss on the iteration's episodes, returns = advantage + value, with the
policy's batches and schedule; writes the critic of iteration i + 1 and its optimizer state (docs/design.md#baselines)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from schemas.critic_metrics import CRITIC_METRICS
from spo.policy.critic import load_critic
from spo.policy.device import resolve_device
from spo.policy.transformers_engine import set_activation_checkpointing
from spo.ppo import CriticEpisode, critic_step
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_tokenizer, write_folder_atomic
from stages.runtime.run_dir import RunDir
from stages.training.optimize import optimize, save_optimizer_state

SPEC = StageSpec(
    name="critic-train",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "episodes"), run.artifact(i, "critic_values"), run.critic(i),
                          run.tokenizer(), *([run.critic_optimizer_state(i)] if i > 0 else [])],
    writes=lambda run, i: [run.critic(i + 1), run.critic_optimizer_state(i + 1), run.artifact(i, "critic_metrics")],
    config=("critic", "train"),
)


def critic_train(run: Path, iteration: int, force: bool = False) -> StageReport:
    """One iteration of the critic's clipped value loss."""
    return execute(SPEC, RunDir(Path(run)), iteration, _train, force)


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
    set_activation_checkpointing(model, cfg.train.activation_checkpointing)
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
