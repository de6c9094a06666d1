"""The contract between stages: one documented, versioned Arrow schema per artifact."""

import pyarrow as pa

from schemas.boundaries import BOUNDARIES
from schemas.compare import COMPARE
from schemas.contract import SchemaError, describe, validate
from schemas.credit import CREDIT
from schemas.critic_metrics import CRITIC_METRICS
from schemas.critic_values import CRITIC_VALUES
from schemas.episodes import EPISODES
from schemas.eval_results import EVAL_RESULTS
from schemas.mc_samples import MC_SAMPLES
from schemas.prompts import PROMPTS
from schemas.replay import REPLAY
from schemas.rollouts import ROLLOUTS
from schemas.train_metrics import TRAIN_METRICS
from schemas.tree_nodes import TREE_NODES
from schemas.values import VALUES
from schemas.warmstart_metrics import WARMSTART_METRICS

ARTIFACTS = {
    s.metadata[b"artifact"].decode(): s
    for s in (PROMPTS, ROLLOUTS, BOUNDARIES, MC_SAMPLES, VALUES, EPISODES, TRAIN_METRICS, EVAL_RESULTS,
              WARMSTART_METRICS, TREE_NODES, REPLAY, CREDIT, COMPARE,
              CRITIC_VALUES, CRITIC_METRICS)
}
"""Artifact name -> schema; the file of artifact `x` is `x.parquet` (or `x-<n>.parquet` for a numbered part)."""


def schema_for(path) -> "pa.Schema":
    """The schema of the artifact file at `path` (`tree_nodes-2.parquet` is a `tree_nodes` artifact)."""
    name = path.stem.split("-")[0]
    if name not in ARTIFACTS:
        raise SchemaError(f"{path}: no artifact schema named {name!r}; known: {sorted(ARTIFACTS)}")
    return ARTIFACTS[name]

__all__ = ["ARTIFACTS", "SchemaError", "describe", "schema_for", "validate"]
