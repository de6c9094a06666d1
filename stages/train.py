"""Stage `train`: one iteration of PPO-clip updates; writes the next checkpoint and per-step metrics.

Checkpoint i+1 holds the policy weights (Hugging Face format) and the tokenizer; beside it,
`checkpoints/<i+1>-optimizer/` holds the AdamW state and the global step (`optimizer.pt`,
`trainer_state.json`), so iteration i+1, or a resumed run, continues the same optimizer and
learning-rate schedule (docs/design.md#optimizer). The two are separate artifacts so that sampling
stages depend on the weights alone and retention can drop old optimizer states
(docs/architecture.md#retention). Inside a flow both are written behind it while the next iteration
samples (stages/write_behind.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch

from schemas.train_metrics import TRAIN_METRICS
from spo.losses import warmup_linear_decay
from spo.policy.transformers_engine import resolve_dtype
from spo.ppo import Episode, PPOSettings, episode_order, epoch_episodes, ppo_step
from spo.seeds import derive_seed
from stages import write_behind
from stages.artifacts import StageContext, StageReport, StageSpec, execute, read_manifest
from stages.engines import live_optimizer, load_policy, saved
from stages.launch import die_with_parent
from stages.progress import progress_bar
from stages.resources import write_folder_atomic
from stages.run_dir import RunDir

log = logging.getLogger(__name__)

SPEC = StageSpec(
    name="train",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "episodes"), run.checkpoint(i), run.checkpoint(0),
                          *([run.optimizer_state(i)] if i > 0 else [])],
    writes=lambda run, i: [run.checkpoint(i + 1), run.optimizer_state(i + 1), run.artifact(i, "train_metrics")],
    config=("train", "sample.temperature", "model"),
    written_behind=lambda run, i: [run.checkpoint(i + 1), run.optimizer_state(i + 1)],
    rebuilds=lambda run, i: [run.optimizer_state(i)] if i > 0 else [],
)


def train(run: Path, iteration: int, force: bool = False) -> StageReport:
    """PPO-clip + k3 KL over the iteration's episodes, AdamW with warm-up and linear decay."""
    return execute(SPEC, RunDir(Path(run)), iteration, _train, force)


def steps_per_iteration(episodes: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(episodes / batch_size)


def _train(ctx: StageContext):
    write_behind.wait()  # the last checkpoint may still be being written from the tensors this stage changes
    if ctx.cfg.train.world_size > 1:
        return _train_distributed(ctx)
    cfg, every, i = ctx.cfg, ctx.cfg.retention.optimizer_every, ctx.iteration
    policy = load_policy(ctx.run.checkpoint(i), cfg, role="trainer")
    state = ctx.run.optimizer_state(i) if i > 0 else None
    resume = live_optimizer("trainer", state)  # the optimizer that made `state`, still in memory (stages/engines.py)
    if resume is None and state is not None and not written(state):
        resume = replayed(ctx, policy)
    metrics, optimizer, global_step, episodes = iteration_step(ctx, policy, state, resume)
    ctx.write_folder(f"{i + 1:04d}", policy.save)
    if (i + 1) % every == 0 or i + 1 >= cfg.iterations:
        ctx.write_folder(f"{i + 1:04d}-optimizer",
                         lambda folder: save_optimizer_state(folder, optimizer.state_dict(), global_step))
    else:
        ctx.leave_unwritten(f"{i + 1:04d}-optimizer", f"not written (retention.optimizer_every = {every})")
    saved("trainer", policy, ctx.run.checkpoint(i + 1), optimizer, ctx.run.optimizer_state(i + 1), global_step)
    return _outputs(metrics, global_step, episodes)


def iteration_step(ctx: StageContext, policy, state: Path | None, resume: tuple | None):
    """PPO over iteration `ctx.iteration`'s episodes from `state` (or the live `resume` optimizer and step):
    the metrics, the optimizer, the global step and the number of episodes."""
    cfg = ctx.cfg
    rows = ctx.read("episodes").to_pylist()
    ref_logps = (reference_logps(load_policy(ctx.run.checkpoint(0), cfg, role="reference"), rows,
                                 cfg.sample.temperature) if cfg.train.kl_coef > 0 else None)
    episodes, update = policy_update(ctx, rows, ref_logps, policy.model, policy.tokenizer.pad_token_id)
    metrics, optimizer, global_step = optimize(ctx, update, episodes, state, resume=resume)
    return metrics, optimizer, global_step, len(episodes)


def replayed(ctx: StageContext, policy) -> tuple[torch.optim.Optimizer, int]:
    """The optimizer state of checkpoint i that was not written (`retention.optimizer_every`), rebuilt by
    replaying the train stages since the newest state written (or since checkpoint 0): training is
    deterministic, so the replayed weights must equal checkpoint i, which is checked."""
    run, i = ctx.run, ctx.iteration
    start = max((k for k in range(1, i) if written(run.optimizer_state(k))), default=0)
    read_manifest(run.checkpoint(start))  # present and intact, or an error naming it
    log.info("train %04d: optimizer state %04d was not written; replaying train %04d-%04d", i, i, start, i - 1)
    policy.reload(run.checkpoint(start))
    resume = None
    for k in range(start, i):
        past = StageContext(run, k, run.config_at(k), ctx.spec)
        _, optimizer, global_step, _ = iteration_step(past, policy, run.optimizer_state(k) if k > 0 else None, resume)
        resume = (optimizer, global_step)
    expected = {}
    for file in sorted(run.checkpoint(i).glob("*.safetensors")):
        expected.update(safetensors.torch.load_file(file))
    weights = policy.model.state_dict()
    differing = [name for name, tensor in expected.items() if not torch.equal(weights[name], tensor)]
    if differing:
        raise RuntimeError(f"train {i:04d}: replaying train {start:04d}-{i - 1:04d} did not reproduce checkpoint "
                           f"{i:04d} ({len(differing)} tensors differ, e.g. {differing[0]}); the run was trained on "
                           f"another machine or code. Rerun from checkpoint {start:04d} with --force")
    return resume


def written(state: Path) -> bool:
    """Whether an optimizer state's bytes are on disk (not a tombstone of `optimizer_every` or retention)."""
    return "removed" not in read_manifest(state, verify=False, removed_ok=True)


def _outputs(metrics: list[dict], global_step: int, episodes: int):
    last = metrics[-1] if metrics else {}
    return {"train_metrics": pa.Table.from_pylist(metrics, schema=TRAIN_METRICS)}, {
        "train/steps": len(metrics), "train/global_step": global_step, "train/episodes": episodes,
        "train/tokens": sum(m["tokens"] for m in metrics),
        "loss/total": last.get("loss", 0.0), "stats/clipfrac": last.get("clipfrac", 0.0),
        "stats/approx_kl": last.get("approx_kl", 0.0),
    }


@dataclass
class PolicyUpdate:
    """PPO-clip on the policy, as `optimize` runs it: the episodes of each epoch (whitened over the epoch where
    `train.whiten` says so), then one `spo.ppo.ppo_step` per batch (this process's share of it)."""

    model: torch.nn.Module
    settings: PPOSettings
    lr: float
    """Peak learning rate (`train.lr`)."""
    low_precision: bool
    """Compute in bfloat16 over float32 master weights, where the sampler samples in it (docs/design.md#optimizer)."""
    rank: int = 0
    world: int = 1
    name: str = "train"
    """The seed stream of the episode order and the progress bar's name."""

    def epoch(self, chosen: list[Episode]) -> list[Episode]:
        return epoch_episodes(chosen, self.settings)

    def step(self, optimizer: torch.optim.Optimizer, batch: list[Episode]) -> dict:
        device = next(self.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.low_precision):
            return ppo_step(self.model, optimizer, batch, self.settings, rank=self.rank, world=self.world)


def policy_update(ctx: StageContext, rows: list[dict], ref_logps: list | None, model: torch.nn.Module, pad_id: int,
                  rank: int = 0, world: int = 1) -> tuple[list[Episode], PolicyUpdate]:
    """The iteration's episodes (rows of episodes.parquet with their reference log-probs) and the update."""
    cfg, t = ctx.cfg, ctx.cfg.train
    refs = ref_logps if ref_logps is not None else [r["old_logp"] for r in rows]
    episodes = [Episode(r["prompt_ids"], r["response_ids"], r["advantages"], r["mask"], r["old_logp"], ref)
                for r, ref in zip(rows, refs)]
    settings = PPOSettings(micro_batch_size=t.micro_batch_size, temperature=cfg.sample.temperature, pad_id=pad_id,
                           clip=t.clip, kl_coef=t.kl_coef, whiten=t.whiten, grad_clip=t.grad_clip)
    device = next(model.parameters()).device
    low_precision = resolve_dtype(cfg.model.dtype, device) == torch.bfloat16
    return episodes, PolicyUpdate(model, settings, t.lr, low_precision, rank, world)


def _train_distributed(ctx: StageContext):
    """`train.world_size` ranks via torch.distributed.run (stages/train_rank.py); their output moves into place."""
    t, out = ctx.cfg.train, ctx.run.iteration_dir(ctx.iteration) / f".train-ranks-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    launcher = list(ctx.cfg.launch.torchrun_args) or ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc-per-node={t.world_size}",
               "-m", "stages.train_rank", str(ctx.run.root), str(ctx.iteration), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "SPO_PROGRESS": "0"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                                preexec_fn=die_with_parent)  # noqa: PLW1509 (this thread waits for it)
        if result.returncode or not (out / "done.json").is_file():
            first = re.search(r"Root Cause.*?rank\s*:\s*(\d+)", result.stderr, re.DOTALL)  # torchrun's summary
            tail = "\n".join(result.stderr.strip().splitlines()[-12:])
            raise RuntimeError(f"train {ctx.iteration:04d}: torch.distributed.run exited with {result.returncode}"
                               f"{f'; rank {first[1]} failed first' if first else ''}; nothing was written. Its "
                               f"output ends:\n{tail}")
        metrics = pq.read_table(out / "train_metrics.parquet").to_pylist()
        done = json.loads((out / "done.json").read_text())
        write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}"), lambda tmp: shutil.move(out / "checkpoint", tmp),
                            staged=ctx.staged)
        write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}-optimizer"),
                            lambda tmp: shutil.move(out / "optimizer", tmp), staged=ctx.staged)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return _outputs(metrics, done["global_step"], done["episodes"])


class Update(Protocol):
    """What `optimize` steps: the policy's PPO (`PolicyUpdate`) or PPO's critic (stages/critic.py)."""

    model: torch.nn.Module
    lr: float
    name: str

    def epoch(self, chosen: list) -> list: ...

    def step(self, optimizer: torch.optim.Optimizer, batch: list) -> dict: ...


def optimize(ctx: StageContext, update: Update, episodes: list, state: Path | None,
             resume: tuple[torch.optim.Optimizer, int] | None = None,
             load_state: Callable | None = None) -> tuple[list[dict], torch.optim.Optimizer, int]:
    """`train.epochs` passes over the episodes in seeded order (truncated or repeated to
    `train.episodes_per_iteration`), `update.step(optimizer, batch)` per batch under the warm-up +
    linear-decay schedule of peak `update.lr`, AdamW continued from `resume` (an optimizer and its global
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
    model.train()
    metrics = []
    n_steps = steps_per_iteration((wanted or len(episodes)) if episodes else 0, t.batch_size, t.epochs)
    with progress_bar(n_steps, f"{name} {ctx.iteration:04d}") as bar:
        for epoch in range(t.epochs):
            chosen = update.epoch([episodes[i] for i in episode_order(len(episodes), wanted, rng)])
            for start in range(0, len(chosen), t.batch_size):
                step_lr = lr * warmup_linear_decay(min(global_step, total_steps - 1), total_steps, warmup)
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


def reference_logps(reference, rows: list[dict], temperature: float) -> list[list[float]]:
    """Log-probs of the frozen initial policy (`reference`, the engine of checkpoint 0), temperature-scaled
    like the old ones."""
    scores = reference.score([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], temperature)
    return [s.tolist() for s in scores]


def load_optimizer_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore the AdamW state of a previous train stage; return the global step it continues from."""
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return saved_step(folder)


def saved_step(folder: Path) -> int:
    """The global step an optimizer state was saved at."""
    return json.loads((folder / "trainer_state.json").read_text())["step"]
