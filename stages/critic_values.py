"""Stage `critic-values`: the critic of iteration i values the state before every token of the iteration's rollouts
(`critic_values.parquet`); the advantages stage turns them into GAE advantages (docs/design.md#baselines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.critic_values import CRITIC_VALUES
from spo.policy.critic import load_critic, score_states
from spo.policy.device import resolve_device
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir

SPEC = StageSpec(
    name="critic-values",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "rollouts"), run.critic(i), run.tokenizer()],
    writes=lambda run, i: [run.artifact(i, "critic_values")],
    config=(),
)


def critic_values(run: Path, iteration: int, force: bool = False) -> StageReport:
    """The critic's value of the state before every token of the iteration's rollouts."""
    return execute(SPEC, RunDir(Path(run)), iteration, _values, force)


def _values(ctx: StageContext):
    rollouts = ctx.read("rollouts").select(["rollout_id", "prompt_ids", "response_ids"]).to_pylist()
    model = load_critic(ctx.run.critic(ctx.iteration), resolve_device(ctx.cfg.model.device)).eval()
    pad_id = load_tokenizer(ctx.run.tokenizer()).pad_token_id
    values = score_states(model, [r["prompt_ids"] for r in rollouts], [r["response_ids"] for r in rollouts], pad_id)
    rows = [{"rollout_id": r["rollout_id"], "values": v.tolist()} for r, v in zip(rollouts, values)]
    flat = np.concatenate(values) if values else np.zeros(0)
    return {"critic_values": pa.Table.from_pylist(rows, schema=CRITIC_VALUES)}, {
        "critic/value_mean": float(flat.mean()) if flat.size else 0.0}
