"""`eval.parquet`: answers of one checkpoint to held-out questions, graded."""

import pyarrow as pa

from schemas.contract import artifact_schema, column

EVAL_RESULTS = artifact_schema("eval", 1, "held-out answers, one row per answer", [
    column("checkpoint", pa.int32(), "checkpoint evaluated (checkpoint i is the policy of iteration i)"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("mode", pa.string(), "'greedy' or 'sample'"),
    column("sample_index", pa.int32(), "which sample (0 for greedy)"),
    column("response_text", pa.string(), "decoded answer"),
    column("finish_reason", pa.string(), "'stop' or 'length'"),
    column("reward", pa.float32(), "task reward"),
    column("correct", pa.bool_(), "the extracted answer equals the gold answer"),
    column("n_tokens", pa.int32(), "response length in tokens"),
])
