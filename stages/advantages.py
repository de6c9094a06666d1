"""Stage `advantages`: per-token advantages and the loss mask of SPO-chain rollouts, ready for training.

The advantage method is `advantage.method`, an entry of `spo.advantages.ADVANTAGES`: "segment" (SPO:
value differences across the segments, docs/design.md#chain-advantages), "grpo" or "rloo" (one
advantage per rollout from its question's group, docs/design.md#baselines). The probability mask and
the stop-token rule (`spo.advantages.loss_mask`) apply the same way to all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.episodes import EPISODES
from spo.advantages import ADVANTAGES, ChainRollout, advantage_method
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir
from stages.training.episodes import MaskRule, episode_row


def _reads(run: RunDir, i: int) -> list[Path]:
    """Rollouts and the tokenizer (its EOS id), plus boundary values or critic values if the method reads them."""
    method = ADVANTAGES[run.config().advantage.method]
    return [run.artifact(i, "rollouts"), run.tokenizer(),
            *([run.artifact(i, "boundaries"), run.artifact(i, "values")] if method.uses_values else []),
            *([run.artifact(i, "critic_values")] if method.uses_critic else [])]


SPEC = StageSpec(
    name="advantages",
    module=__name__,
    reads=_reads,
    writes=lambda run, i: [run.artifact(i, "episodes")],
    config=("advantage", "partition.tau"),
)


def advantages(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Episodes with per-token advantages and mask from rollouts, boundaries and values."""
    return execute(SPEC, RunDir(Path(run)), iteration, _advantages, force)


def _advantages(ctx: StageContext):
    a, tau = ctx.cfg.advantage, ctx.cfg.partition.tau
    method = advantage_method(a.method, "spo-chain")
    rollouts = ctx.read("rollouts").to_pylist()
    boundaries, values, critic = defaultdict(list), defaultdict(dict), defaultdict(list)
    if method.uses_values:
        boundaries.update((b["rollout_id"], b["boundaries"]) for b in ctx.read("boundaries").to_pylist())
        for v in ctx.read("values").to_pylist():
            values[v["rollout_id"]][v["boundary_index"]] = v["value"]
    if method.uses_critic:
        critic.update((c["rollout_id"], c["values"]) for c in ctx.read("critic_values").to_pylist())
    groups = defaultdict(list)
    for r in rollouts:
        groups[r["prompt_index"]].append(r)
    token_adv = {}
    for group in groups.values():
        inputs = [ChainRollout(np.exp(np.asarray(r["logp"], dtype=np.float64)).tolist(), r["reward"],
                               boundaries[r["rollout_id"]],
                               [values[r["rollout_id"]][i] for i in range(len(boundaries[r["rollout_id"]]))],
                               critic[r["rollout_id"]])
                  for r in group]
        for r, adv in zip(group, method.chain(inputs, tau=tau, prob_mask=a.prob_mask, gamma=a.gamma, lam=a.lam,
                                                group_std=a.group_std)):
            token_adv[r["rollout_id"]] = adv
    rule = MaskRule.of(ctx.cfg, load_tokenizer(ctx.run.tokenizer()).eos_token_id)
    rows = [{"episode_id": k, **episode_row(rule, str(r["rollout_id"]), r["question_id"], ctx.iteration, "rollout",
                                            r["prompt_ids"], r["response_ids"], token_adv[r["rollout_id"]], r["logp"],
                                            r["reward"])}
            for k, r in enumerate(rollouts)]
    masked = sum(sum(row["mask"]) for row in rows)
    table = pa.Table.from_pylist(rows, schema=EPISODES)
    nonzero = sum(any(x != 0.0 for x in row["advantages"]) for row in rows)
    return {"episodes": table}, {"episodes/masked_tokens": masked, "episodes/nonzero_advantage": nonzero,
                                 "episodes/tokens": sum(len(r["response_ids"]) for r in rows)}
