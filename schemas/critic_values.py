"""`critic_values.parquet`: PPO's critic's value of the state before every response token of a rollout."""

import pyarrow as pa

from schemas.contract import TOKEN_FLOATS, artifact_schema, column

CRITIC_VALUES = artifact_schema("critic_values", 1, "the critic's values, one row per rollout", [
    column("rollout_id", pa.int64(), "row of rollouts.parquet"),
    column("values", TOKEN_FLOATS, "V(s_t) for each response token t: the prompt and the first t tokens"),
])
