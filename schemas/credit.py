"""`credit.parquet`: the credit-assignment probe, one row per episode (docs/design.md#credit-probe)."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

CREDIT = artifact_schema("credit", 1, "where each episode's negative advantage mass lies relative to the "
                                      "first wrong token of its response path", [
    column("episode_id", pa.int64(), "row of episodes.parquet"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("kind", pa.string(), "'rollout' or 'tree_edge', as in episodes.parquet"),
    column("path_offset", pa.int32(), "position of the episode's first token in its response path (0 for a rollout)"),
    column("first_wrong", pa.int32(), "path position of the first token that leaves the target; null when "
                                      "the path so far matches it", nullable=True),
    column("first_wrong_prob", pa.float32(), "sampling probability p of that token when it lies in this "
                                             "episode", nullable=True),
    column("first_wrong_trained", pa.bool_(), "that token lies in this episode and inside its loss mask"),
    column("negative_mass", pa.float32(), "sum of max(-A, 0) over the episode's tokens"),
    column("on_first_wrong", pa.float32(), "of it, on the first wrong token"),
    column("on_correct", pa.float32(), "of it, on tokens before the first wrong token (correct tokens)"),
    column("after_first_wrong", pa.float32(), "of it, on tokens after the first wrong token"),
    column("correct_advantage_sum", pa.float32(), "sum of A over trained correct tokens of an episode that "
                                                  "holds the first wrong token"),
    column("correct_trained", pa.int32(), "how many tokens that sum covers"),
])
