"""`train_metrics.parquet`: one row per optimizer step of an iteration's PPO update."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

TRAIN_METRICS = artifact_schema("train_metrics", 1, "PPO update diagnostics, one row per optimizer step", [
    column("step", pa.int32(), "global optimizer step (across iterations)"),
    column("epoch", pa.int32(), "pass over the iteration's episodes"),
    column("lr", pa.float64(), "learning rate used for the step"),
    column("loss", pa.float64(), "loss/total: policy + kl"),
    column("loss_policy", pa.float64(), "loss/policy: PPO-clip token mean over the mask"),
    column("loss_kl", pa.float64(), "loss/kl: kl_coef * k3 KL to the initial policy"),
    column("ratio_mean", pa.float64(), "stats/ratio: mean new/old probability ratio over the mask"),
    column("clipfrac", pa.float64(), "stats/clipfrac: fraction of masked tokens whose ratio was clipped"),
    column("approx_kl", pa.float64(), "stats/approx_kl: k3 estimate of KL(old || new) over the mask"),
    column("grad_norm", pa.float64(), "global gradient norm before clipping"),
    column("sequences", pa.int32(), "episodes in the step"),
    column("tokens", pa.int32(), "masked tokens in the step"),
])
