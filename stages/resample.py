"""Stage `resample`: K Monte-Carlo continuations from each unique boundary prefix, and the values.

Prefixes are token ids (docs/design.md#token-ids): prompt ids + the first b response ids. Identical
prefixes, within a rollout or across rollouts, are sampled once and shared (docs/design.md#mc-budget).
A prefix that already fills the context gets no continuation (docs/design.md#context-guard).
Continuations are graded on response prefix + continuation (docs/design.md#mc-rewards). Boundaries
past `resample.max_estimated` are not sampled: their value is the rollout's reward (VinePPO's cap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.mc_samples import MC_SAMPLES
from schemas.values import VALUES
from spo.rewards import overlong_shaped
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import Draw, sample_draws

SPEC = StageSpec(
    name="resample",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "rollouts"), run.artifact(i, "boundaries"), run.checkpoint(i)],
    writes=lambda run, i: [run.artifact(i, "mc_samples"), run.artifact(i, "values")],
    config=("task", "sample", "resample", "model"),
)


def resample(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Estimate V(b) = mean reward of K continuations at every boundary of every rollout."""
    return execute(SPEC, RunDir(Path(run)), iteration, _resample, force)


def _resample(ctx: StageContext):
    cfg, s, k = ctx.cfg, ctx.cfg.sample, ctx.cfg.resample.k
    rollouts = {r["rollout_id"]: r for r in ctx.read("rollouts").to_pylist()}
    boundaries = ctx.read("boundaries").to_pylist()
    task = load_task(cfg)

    prefix_ids: dict[tuple[int, ...], int] = {}  # unique prefix -> prefix_id
    first_use: dict[int, tuple[int, int]] = {}  # prefix_id -> (rollout_id, b) that defines its grading
    value_rows = []
    cap = cfg.resample.max_estimated or None
    for row in boundaries:
        rollout = rollouts[row["rollout_id"]]
        for index, b in enumerate(row["boundaries"]):
            if cap is not None and index >= cap:  # VinePPO's cap: no sample, the reward (filled backwards)
                value_rows.append({"rollout_id": row["rollout_id"], "boundary_index": index, "boundary": b,
                                   "prefix_id": -1, "shared": False, "context_guarded": False, "filled": True,
                                   "value": rollout["reward"], "value_std": 0.0, "n_samples": 0})
                continue
            prefix = tuple(rollout["prompt_ids"]) + tuple(rollout["response_ids"][:b])
            shared = prefix in prefix_ids
            pid = prefix_ids.setdefault(prefix, len(prefix_ids))
            first_use.setdefault(pid, (row["rollout_id"], b))
            value_rows.append({"rollout_id": row["rollout_id"], "boundary_index": index, "boundary": b,
                               "prefix_id": pid, "shared": shared,
                               "context_guarded": len(prefix) >= s.context_size, "filled": False})

    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    sampled = [(prefix, pid) for prefix, pid in prefix_ids.items() if len(prefix) < s.context_size]
    draws = [Draw(prefix, rollouts[first_use[pid][0]]["response_ids"][: first_use[pid][1]], k, _prefix_key(prefix),
                  rollouts[first_use[pid][0]]["question_id"]) for prefix, pid in sampled]
    requests, results, sampling = sample_draws(engine, draws, s.max_new_tokens, s.context_size, s.temperature,
                                               s.top_p, cfg.seed, ctx.iteration, "resample",
                                               f"resample {ctx.iteration:04d}", "mc", ctx)

    mc_rows, rewards_of = [], {}
    for (_, pid), request, samples in zip(sampled, requests, results):
        example = task.example(rollouts[first_use[pid][0]]["question_id"])
        rewards = []
        for j, sample in enumerate(samples):
            # shaped by the whole response's length, prefix and continuation, as a rollout's (docs/design.md#rewards)
            reward = overlong_shaped(sample.reward(task, example), first_use[pid][1] + len(sample.token_ids),
                                     s.max_new_tokens, s.overlong_buffer, s.overlong_penalty)
            rewards.append(reward)
            mc_rows.append({"prefix_id": pid, "sample_index": j, "seed": request.seed,
                            "continuation_ids": sample.token_ids, "text": sample.text,
                            "finish_reason": sample.finish_reason, "reward": reward})
        rewards_of[pid] = rewards

    for row in value_rows:
        if row["filled"]:
            continue
        rewards = rewards_of.get(row["prefix_id"])
        if rewards is None:  # context-guarded (docs/design.md#context-guard): the rollout's reward if it ended here
            rollout = rollouts[row["rollout_id"]]
            ended = row["boundary"] == len(rollout["response_ids"])
            row.update(value=rollout["reward"] if ended else task.unfinished_penalty, value_std=0.0, n_samples=0)
        else:
            row.update(value=float(np.mean(rewards)), value_std=float(np.std(rewards)), n_samples=len(rewards))
    counters = {
        "mc/prefixes": len(prefix_ids), "mc/boundaries": len(value_rows),
        "mc/shared_boundaries": sum(r["shared"] for r in value_rows),
        "mc/context_guarded": sum(r["context_guarded"] for r in value_rows),
        "mc/filled": sum(r["filled"] for r in value_rows),
        "mc/continuations": len(mc_rows), **sampling,
    }
    return {"mc_samples": pa.Table.from_pylist(mc_rows, schema=MC_SAMPLES),
            "values": pa.Table.from_pylist(value_rows, schema=VALUES)}, counters


def _prefix_key(prefix: tuple[int, ...]) -> str:
    return ",".join(map(str, prefix))
