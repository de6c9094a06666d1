"""Stage `advantages`: per-token advantages and the loss mask, ready for training (episodes).

The advantage method is chosen once from config: "segment" (SPO: value differences across the
segments, reference §2.5), "grpo" or "rloo" (one advantage per rollout from its question's group,
reference §4.6). The probability mask and the EOS rule (rule 7) apply the same way to all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.episodes import EPISODES
from spo.advantages import chain_token_advantages, group_advantages, loss_mask
from stages.artifacts import StageContext, StageReport, StageSpec, execute
from stages.resources import load_tokenizer
from stages.run_dir import RunDir

SPEC = StageSpec(
    name="advantages",
    reads=lambda run, i: [run.artifact(i, "rollouts"), run.artifact(i, "boundaries"), run.artifact(i, "values"),
                          run.checkpoint(0)],  # the tokenizer's EOS id
    writes=lambda run, i: [run.artifact(i, "episodes")],
    config=("advantage", "partition.tau"),
)


def advantages(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Episodes with per-token advantages and mask from rollouts, boundaries and values."""
    return execute(SPEC, RunDir(Path(run)), iteration, _advantages, force)


def segment_rollout_advantages(rollouts, boundaries, values, tau, prob_mask) -> dict[int, list[float]]:
    """SPO: each segment's V(end) - V(start) on its tokens (the last segment ends at the reward)."""
    by_rollout = defaultdict(dict)
    for v in values:
        by_rollout[v["rollout_id"]][v["boundary_index"]] = v["value"]
    out = {}
    for r in rollouts:
        bounds = boundaries[r["rollout_id"]]
        vals = [by_rollout[r["rollout_id"]][i] for i in range(len(bounds))]
        probs = np.exp(np.asarray(r["logp"], dtype=np.float64)).tolist()
        out[r["rollout_id"]] = chain_token_advantages(probs, bounds, vals, r["reward"], tau=tau, prob_mask=prob_mask)
    return out


def group_rollout_advantages(method: str):
    """GRPO / RLOO: one advantage per rollout from the rewards of its question's N samples."""

    def compute(rollouts, boundaries, values, tau, prob_mask) -> dict[int, list[float]]:
        groups = defaultdict(list)
        for r in rollouts:
            groups[r["prompt_index"]].append(r)
        out = {}
        for group in groups.values():
            for r, a in zip(group, group_advantages([r["reward"] for r in group], method=method)):
                out[r["rollout_id"]] = [a] * len(r["response_ids"])
        return out

    return compute


ADVANTAGE_METHODS = {
    "segment": segment_rollout_advantages,
    "grpo": group_rollout_advantages("grpo"),
    "rloo": group_rollout_advantages("rloo"),
}


def _advantages(ctx: StageContext):
    a, tau = ctx.cfg.advantage, ctx.cfg.partition.tau
    if a.method not in ADVANTAGE_METHODS:
        raise ValueError(f"unknown advantage.method {a.method!r}; choose one of {sorted(ADVANTAGE_METHODS)}")
    rollouts = ctx.read("rollouts").to_pylist()
    boundaries = {b["rollout_id"]: b["boundaries"] for b in ctx.read("boundaries").to_pylist()}
    values = ctx.read("values").to_pylist()
    eos = load_tokenizer(ctx.run.checkpoint(0)).eos_token_id
    token_adv = ADVANTAGE_METHODS[a.method](rollouts, boundaries, values, tau, a.prob_mask)
    rows, masked = [], 0
    for r in rollouts:
        mask = np.array(loss_mask(r["logp"], r["response_ids"], tau, a.prob_mask, a.train_on_eos, eos), dtype=bool)
        adv = np.where(mask, np.asarray(token_adv[r["rollout_id"]], dtype=np.float64), 0.0)
        masked += int(mask.sum())
        rows.append({"episode_id": len(rows), "source_id": str(r["rollout_id"]), "question_id": r["question_id"],
                     "iteration": ctx.iteration, "kind": "rollout", "prompt_ids": r["prompt_ids"],
                     "response_ids": r["response_ids"], "advantages": adv.tolist(), "mask": mask.tolist(),
                     "old_logp": r["logp"], "reward": r["reward"]})
    table = pa.Table.from_pylist(rows, schema=EPISODES)
    nonzero = sum(any(x != 0.0 for x in row["advantages"]) for row in rows)
    return {"episodes": table}, {"episodes/masked_tokens": masked, "episodes/nonzero_advantage": nonzero,
                                 "episodes/tokens": sum(len(r["response_ids"]) for r in rows)}
