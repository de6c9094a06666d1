"""The contract between stages: one documented, versioned Arrow schema per artifact."""

from schemas.boundaries import BOUNDARIES
from schemas.contract import SchemaError, describe, validate
from schemas.episodes import EPISODES
from schemas.eval_results import EVAL_RESULTS
from schemas.mc_samples import MC_SAMPLES
from schemas.prompts import PROMPTS
from schemas.rollouts import ROLLOUTS
from schemas.train_metrics import TRAIN_METRICS
from schemas.values import VALUES
from schemas.warmstart_metrics import WARMSTART_METRICS

ARTIFACTS = {
    s.metadata[b"artifact"].decode(): s
    for s in (PROMPTS, ROLLOUTS, BOUNDARIES, MC_SAMPLES, VALUES, EPISODES, TRAIN_METRICS, EVAL_RESULTS,
              WARMSTART_METRICS)
}
"""Artifact name -> schema; the file of artifact `x` is `x.parquet`."""

__all__ = ["ARTIFACTS", "SchemaError", "describe", "validate"]
