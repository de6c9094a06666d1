"""`values.parquet`: the MC value at every boundary of every rollout."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

VALUES = artifact_schema("values", 1, "boundary values, one row per (rollout, boundary)", [
    column("rollout_id", pa.int64(), "row of rollouts.parquet"),
    column("boundary_index", pa.int32(), "position of the boundary in the rollout's list"),
    column("boundary", pa.int32(), "prefix length b"),
    column("prefix_id", pa.int64(), "the unique prefix (prompt + first b response tokens) it was sampled from; -1 when filled"),
    column("value", pa.float32(), "mean reward of the prefix's continuations"),
    column("value_std", pa.float32(), "population std of those rewards (0 when context-guarded)"),
    column("n_samples", pa.int32(), "continuations behind the value (0 when context-guarded)"),
    column("shared", pa.bool_(), "the prefix was already sampled for an earlier (rollout, boundary)"),
    column("context_guarded", pa.bool_(), "the prefix fills the context: no continuation (docs/design.md#context-guard)"),
    column("filled", pa.bool_(), "past resample.max_estimated: not sampled, the value is the rollout's reward"),
])
