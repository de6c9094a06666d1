"""`critic_metrics.parquet`: one row per optimizer step of the critic's update (PPO)."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

CRITIC_METRICS = artifact_schema("critic_metrics", 1, "critic update diagnostics, one row per optimizer step", [
    column("step", pa.int32(), "global critic optimizer step (across iterations)"),
    column("epoch", pa.int32(), "pass over the iteration's episodes"),
    column("lr", pa.float64(), "learning rate used for the step"),
    column("loss", pa.float64(), "loss/value: clipped value loss, 0.5 * masked mean of the squared error"),
    column("grad_norm", pa.float64(), "global gradient norm before clipping"),
    column("sequences", pa.int32(), "episodes in the step"),
    column("tokens", pa.int32(), "tokens in the loss"),
])
