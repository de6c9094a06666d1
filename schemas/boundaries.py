"""`boundaries.parquet`: where each rollout is cut into segments."""

import pyarrow as pa

from schemas.contract import TOKEN_IDS, artifact_schema, column

BOUNDARIES = artifact_schema("boundaries", 1, "segment boundaries, one row per rollout", [
    column("rollout_id", pa.int64(), "row of rollouts.parquet"),
    column("method", pa.string(), "partition method (cutpoint, fixed_count, fixed_length, steps, none)"),
    column("boundaries", TOKEN_IDS, "sorted prefix lengths b: the state after the first b response tokens"),
    column("n_cutpoints", pa.int32(), "response tokens with p < tau"),
    column("n_segments", pa.int32(), "segments the boundaries make, the span before the first one included"),
])
