"""`critic_metrics.parquet`: one row per optimizer step of the critic's update (PPO)."""

import pyarrow as pa

from schemas.contract import artifact_schema, column
from schemas.train_metrics import TRAIN_METRICS

CRITIC_METRICS = artifact_schema("critic_metrics", 1, "critic update diagnostics, one row per optimizer step", [
    column("step", pa.int32(), "global critic optimizer step (across iterations)"),
    TRAIN_METRICS.field("epoch"),
    TRAIN_METRICS.field("lr"),
    column("loss", pa.float64(), "loss/value: clipped value loss, 0.5 * masked mean of the squared error"),
    TRAIN_METRICS.field("grad_norm"),
    TRAIN_METRICS.field("sequences"),
    column("tokens", pa.int32(), "tokens in the loss"),
])
