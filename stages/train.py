"""Stage `train`: one iteration of PPO-clip updates; writes the next checkpoint and per-step metrics.

Checkpoint i+1 holds the policy weights (Hugging Face format) and the tokenizer; beside it,
`checkpoints/<i+1>-optimizer/` holds the AdamW state and the global step (`optimizer.pt`,
`trainer_state.json`), so iteration i+1, or a resumed run, continues the same optimizer and
learning-rate schedule (docs/design.md#optimizer). The two are separate artifacts so that sampling
stages depend on the weights alone and retention can drop old optimizer states
(docs/architecture.md#retention). Inside a flow both are written behind it while the next iteration
samples (stages/runtime/write_behind.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch

from schemas.train_metrics import TRAIN_METRICS
from stages.runtime import write_behind
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute, read_manifest
from stages.runtime.resources import write_folder_atomic
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import live_optimizer, load_policy, saved
from stages.sampling.launch import die_with_parent
from stages.training import ranks
from stages.training.optimize import optimize, save_optimizer_state
from stages.training.policy import policy_update, reference_logps

log = logging.getLogger(__name__)

SPEC = StageSpec(
    name="train",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "episodes"), run.checkpoint(i), run.checkpoint(0),
                          *([run.optimizer_state(i)] if i > 0 else [])],
    writes=lambda run, i: [run.checkpoint(i + 1), run.optimizer_state(i + 1), run.artifact(i, "train_metrics")],
    # sample.max_new_tokens (Dr. GRPO's normaliser, train.loss_agg) is not named: it reaches this key through the
    # episodes, whose sampling stages key on the whole sample section, and naming it would re-key every run
    config=("train", "sample.temperature", "model"),
    written_behind=lambda run, i: [run.checkpoint(i + 1), run.optimizer_state(i + 1)],
    rebuilds=lambda run, i: [run.optimizer_state(i)] if i > 0 else [],
)


def train(run: Path, iteration: int, force: bool = False) -> StageReport:
    """PPO-clip + k3 KL over the iteration's episodes, AdamW with warm-up and linear decay."""
    return execute(SPEC, RunDir(Path(run)), iteration, _train, force)


def _train(ctx: StageContext):
    write_behind.wait()  # the last checkpoint may still be being written from the tensors this stage changes
    if ctx.cfg.train.world_size > 1:
        return _train_distributed(ctx)
    cfg, every, i = ctx.cfg, ctx.cfg.retention.optimizer_every, ctx.iteration
    policy = load_policy(ctx.run.checkpoint(i), cfg, role="trainer")
    state = ctx.run.optimizer_state(i) if i > 0 else None
    resume = live_optimizer("trainer", state)  # the optimizer that made `state`, still in memory (stages/sampling/engines.py)
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


LAUNCHER_LINE = re.compile(r"^[DIWEF]\d{4} .*torch/distributed/elastic/", re.MULTILINE)
"""The first line torch.distributed.run's agent logs when a rank fails; the ranks' own output comes before it."""


def launcher_failure(returncode: int, stderr: str, lines: int = 12) -> str:
    """What a failed torch.distributed.run says: the rank that failed first (its summary's root cause), the end
    of the ranks' own output (their error, which the summary only calls a signal or an exit code), and the end
    of the summary."""
    first = re.search(r"Root Cause.*?rank\s*:\s*(\d+)", stderr, re.DOTALL)
    split = LAUNCHER_LINE.search(stderr)
    ranks_out, summary = (stderr[:split.start()], stderr[split.start():]) if split else ("", stderr)
    own = "\n".join(ranks_out.strip().splitlines()[-lines:])
    return (f"torch.distributed.run exited with {returncode}{f'; rank {first[1]} failed first' if first else ''}; "
            f"nothing was written. The ranks' output ends:\n{own or '(nothing)'}\n"
            f"The launcher's summary ends:\n" + "\n".join(summary.strip().splitlines()[-lines:]))


def _train_distributed(ctx: StageContext):
    """`train.world_size` ranks via torch.distributed.run (stages/training/ranks.py); their output moves into place."""
    t, out = ctx.cfg.train, ctx.run.iteration_dir(ctx.iteration) / f".train-ranks-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    launcher = list(ctx.cfg.launch.torchrun_args) or ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc-per-node={t.world_size}",
               "-m", ranks.__name__, str(ctx.run.root), str(ctx.iteration), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "SPO_PROGRESS": "0"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                                preexec_fn=die_with_parent)  # safe beside threads: this thread waits for it
        if result.returncode or not (out / "done.json").is_file():
            raise RuntimeError(f"train {ctx.iteration:04d}: " + launcher_failure(result.returncode, result.stderr))
        metrics = pq.read_table(out / "train_metrics.parquet").to_pylist()
        done = json.loads((out / "done.json").read_text())
        write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}"), lambda tmp: shutil.move(out / "checkpoint", tmp),
                            staged=ctx.staged)
        write_folder_atomic(ctx.output(f"{ctx.iteration + 1:04d}-optimizer"),
                            lambda tmp: shutil.move(out / "optimizer", tmp), staged=ctx.staged)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return _outputs(metrics, done["global_step"], done["episodes"])


