"""`warmstart.parquet`: supervised warm-start steps and held-out checks."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

WARMSTART_METRICS = artifact_schema("warmstart", 1, "SFT diagnostics, one row per update", [
    column("step", pa.int32(), "SFT step (1-based) of the weights after this update; after a rewind (a check "
           "past the band) the steps from the check it went back to come again"),
    column("loss", pa.float64(), "token-mean cross-entropy of the reference responses"),
    column("lr", pa.float64(), "learning rate used"),
    column("accuracy", pa.float64(), "held-out greedy accuracy, when checked at this step", nullable=True),
    column("selected", pa.bool_(), "the checkpoint kept as checkpoint 0"),
])
