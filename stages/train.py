"""Stage `train`: one iteration of PPO-clip updates; writes the next checkpoint and per-step metrics.

Checkpoint i+1 holds the policy weights (Hugging Face format) and the tokenizer; beside it,
`checkpoints/<i+1>-optimizer/` holds the AdamW state and the global step (`optimizer.pt`,
`trainer_state.json`), so iteration i+1, or a resumed run, continues the same optimizer and
learning-rate schedule (docs/design.md#optimizer). The two are separate artifacts so that sampling
stages depend on the weights alone and retention can drop old optimizer states
(docs/architecture.md#retention).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow as pa
import torch

from schemas.train_metrics import TRAIN_METRICS
from spo.losses import warmup_linear_decay
from spo.ppo import Episode, batch_whitened, episode_order, ppo_step
from spo.seeds import derive_seed
from stages.artifacts import StageContext, StageReport, StageSpec, execute
from stages.progress import progress_bar
from spo.policy.transformers_engine import resolve_dtype
from stages.engines import load_policy
from stages.resources import write_folder_atomic
from stages.run_dir import RunDir

SPEC = StageSpec(
    name="train",
    reads=lambda run, i: [run.artifact(i, "episodes"), run.checkpoint(i), run.checkpoint(0),
                          *([run.optimizer_state(i)] if i > 0 else [])],
    writes=lambda run, i: [run.checkpoint(i + 1), run.optimizer_state(i + 1), run.artifact(i, "train_metrics")],
    config=("train", "sample.temperature", "iterations", "model"),
)


def train(run: Path, iteration: int, force: bool = False) -> StageReport:
    """PPO-clip + k3 KL over the iteration's episodes, AdamW with warm-up and linear decay."""
    return execute(SPEC, RunDir(Path(run)), iteration, _train, force)


def steps_per_iteration(episodes: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(episodes / batch_size)


def _train(ctx: StageContext):
    cfg, t = ctx.cfg, ctx.cfg.train
    temperature = cfg.sample.temperature
    rows = ctx.read("episodes").to_pylist()
    policy = load_policy(ctx.run.checkpoint(ctx.iteration), cfg, role="trainer")
    model = policy.model
    pad_id = policy.tokenizer.pad_token_id
    ref_logps = _reference_logps(ctx, rows, temperature) if t.kl_coef > 0 else [r["old_logp"] for r in rows]
    episodes = [Episode(r["prompt_ids"], r["response_ids"], r["advantages"], r["mask"], r["old_logp"], ref)
                for r, ref in zip(rows, ref_logps)]
    rng = random.Random(derive_seed(cfg.seed, ctx.iteration, "train", "order"))
    wanted = t.episodes_per_iteration
    total_steps = cfg.iterations * steps_per_iteration(wanted or len(episodes), t.batch_size, t.epochs)
    total_steps = max(total_steps, 1)
    warmup = min(math.ceil(t.warmup_ratio * total_steps), total_steps - 1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.adam_betas, eps=1e-8,
                                  weight_decay=t.weight_decay)
    step = _load_optimizer(ctx.run.optimizer_state(ctx.iteration) if ctx.iteration > 0 else None, optimizer)
    model.train()
    device = next(model.parameters()).device
    # float32 master weights; compute in bfloat16 where the sampler samples in it (docs/design.md#optimizer)
    low_precision = resolve_dtype(cfg.model.dtype, device) == torch.bfloat16
    metrics = []
    n_steps = steps_per_iteration((wanted or len(episodes)) if episodes else 0, t.batch_size, t.epochs)
    with progress_bar(n_steps, f"train {ctx.iteration:04d}") as bar:
        for epoch in range(t.epochs):
            chosen = [episodes[i] for i in episode_order(len(episodes), wanted, rng)]
            if t.whiten == "batch" and chosen:
                chosen = [Episode(e.prompt_ids, e.response_ids, adv, e.mask, e.old_logp, e.ref_logp)
                          for e, adv in zip(chosen, batch_whitened(chosen))]
            for start in range(0, len(chosen), t.batch_size):
                lr = t.lr * warmup_linear_decay(min(step, total_steps - 1), total_steps, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
                    out = ppo_step(model, optimizer, chosen[start : start + t.batch_size], t.micro_batch_size,
                                   temperature, pad_id, t.clip, t.kl_coef, t.whiten, t.grad_clip)
                step += 1
                metrics.append({"step": step, "epoch": epoch, "lr": lr, **out})
                bar.update(1)
    model.eval()

    def write_state(folder: Path) -> None:
        folder.mkdir(parents=True)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))

    write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}"), policy.save)
    write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}-optimizer"), write_state)
    table = pa.Table.from_pylist(metrics, schema=TRAIN_METRICS)
    last = metrics[-1] if metrics else {}
    return {"train_metrics": table}, {
        "train/steps": len(metrics), "train/global_step": step, "train/episodes": len(episodes),
        "train/tokens": sum(m["tokens"] for m in metrics),
        "loss/total": last.get("loss", 0.0), "stats/clipfrac": last.get("clipfrac", 0.0),
        "stats/approx_kl": last.get("approx_kl", 0.0),
    }


def _reference_logps(ctx: StageContext, rows: list[dict], temperature: float) -> list[list[float]]:
    """Log-probs of the frozen initial policy (checkpoint 0), temperature-scaled like the old ones."""
    reference = load_policy(ctx.run.checkpoint(0), ctx.cfg, role="reference")
    scores = reference.score([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], temperature)
    return [s.tolist() for s in scores]


def _load_optimizer(folder: Path | None, optimizer: torch.optim.Optimizer) -> int:
    """Restore the AdamW state of a previous train stage; return the global step (0 for a fresh start)."""
    if folder is None:
        return 0
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return json.loads((folder / "trainer_state.json").read_text())["step"]
