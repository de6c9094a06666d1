"""Stage `partition`: cut each rollout into segments (cutpoints, or a baseline's partition)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.boundaries import BOUNDARIES
from spo.advantages import policy_tokens
from spo.segments import PARTITIONS, partition_boundaries
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir

SPEC = StageSpec(
    name="partition",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "rollouts"), run.tokenizer()],  # for "steps"
    writes=lambda run, i: [run.artifact(i, "boundaries")],
    config=("partition", "advantage.train_on_eos"),
)


def partition(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Boundaries per rollout from the recomputed probabilities p = exp(logp) (docs/design.md#threshold, docs/design.md#probabilities)."""
    return execute(SPEC, RunDir(Path(run)), iteration, _partition, force)


def _partition(ctx: StageContext):
    p = ctx.cfg.partition
    rollouts = ctx.read("rollouts").select(["rollout_id", "response_ids", "logp"]).to_pylist()
    partition = PARTITIONS[p.method]  # a known name: checked when the config was built
    params = {name: getattr(p, name) for name in partition.params}
    tokenizer = load_tokenizer(ctx.run.tokenizer())
    train_on_eos = ctx.cfg.advantage.train_on_eos
    rows = []
    for r in rollouts:
        # an untrained final EOS is not a decision of the policy: never a cutpoint (docs/design.md#stop-token)
        ids = r["response_ids"][: policy_tokens(r["response_ids"], train_on_eos, tokenizer.eos_token_id)]
        probs = np.exp(np.asarray(r["logp"][: len(ids)], dtype=np.float64)).tolist()
        texts = [tokenizer.decode([t]) for t in ids] if partition.reads == "token_texts" else None
        bounds = partition_boundaries(p.method, probs=probs, token_texts=texts, prompt_boundary=p.prompt_boundary,
                                      **params)
        rows.append({"rollout_id": r["rollout_id"], "method": p.method, "boundaries": bounds,
                     "n_cutpoints": sum(q < p.tau for q in probs),
                     "n_segments": len(bounds) + (0 if bounds and bounds[0] == 0 else 1)})
    table = pa.Table.from_pylist(rows, schema=BOUNDARIES)
    n = max(len(rows), 1)
    return {"boundaries": table}, {
        "partition/boundaries_mean": sum(len(r["boundaries"]) for r in rows) / n,
        "partition/cutpoints_mean": sum(r["n_cutpoints"] for r in rows) / n,
    }
