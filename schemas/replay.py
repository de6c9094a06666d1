"""`replay.parquet`: SPO-tree edges waiting in the replay buffer after an iteration (docs/design.md#replay-buffer)."""

from schemas.contract import artifact_schema
from schemas.episodes import EPISODES

REPLAY = artifact_schema(
    "replay", 1, "tree-edge episodes not yet trained on, one row per edge; `iteration` is when it was sampled",
    list(EPISODES),
)
