"""`episodes.parquet`: training samples with per-token advantages and the loss mask."""

import pyarrow as pa

from schemas.contract import TOKEN_FLAGS, TOKEN_FLOATS, TOKEN_IDS, artifact_schema, column

EPISODES = artifact_schema("episodes", 1, "training samples, one row per episode", [
    column("episode_id", pa.int64(), "unique in the artifact"),
    column("source_id", pa.string(), "rollout_id (chain) or node_id (tree edge) it comes from"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("iteration", pa.int32(), "iteration that sampled it (older for replayed tree edges)"),
    column("kind", pa.string(), "'rollout' (a whole response) or 'tree_edge' (one segment of a tree)"),
    column("prompt_ids", TOKEN_IDS, "conditioning token ids (prompt, plus earlier segments for tree edges)"),
    column("response_ids", TOKEN_IDS, "trained token ids"),
    column("advantages", TOKEN_FLOATS, "advantage per response token (0 outside the mask)"),
    column("mask", TOKEN_FLAGS, "tokens that count in the loss (probability mask, EOS rule)"),
    column("old_logp", TOKEN_FLOATS, "log-probs of the sampling policy at the sampling temperature"),
    column("reward", pa.float32(), "the rollout's reward, or V(node) for a tree edge"),
])
