"""`mc_samples.parquet`: K Monte-Carlo continuations from each unique boundary prefix."""

import pyarrow as pa

from schemas.contract import TOKEN_IDS, artifact_schema, column

MC_SAMPLES = artifact_schema("mc_samples", 1, "MC continuations, one row per continuation", [
    column("prefix_id", pa.int64(), "unique boundary prefix (see values.parquet)"),
    column("sample_index", pa.int32(), "which of the K continuations"),
    column("seed", pa.int64(), "seed of the prefix's sampling request"),
    column("continuation_ids", TOKEN_IDS, "sampled continuation token ids"),
    column("text", pa.string(), "response prefix + continuation, as graded (docs/design.md#mc-rewards)"),
    column("finish_reason", pa.string(), "'stop' or 'length'"),
    column("reward", pa.float32(), "task reward of prefix + continuation"),
])
