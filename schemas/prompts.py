"""`prompts.parquet`: the training questions drawn for one iteration, formatted and tokenized."""

import pyarrow as pa

from schemas.contract import TOKEN_IDS, artifact_schema, column

PROMPTS = artifact_schema("prompts", 1, "questions drawn for one iteration, one row per question", [
    column("prompt_index", pa.int32(), "position of the question in this iteration's draw"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("question", pa.string(), "question text as in the data"),
    column("answer", pa.string(), "gold final answer"),
    column("prompt_text", pa.string(), "the formatted prompt (for people; inputs use prompt_ids)"),
    column("prompt_ids", TOKEN_IDS, "prompt token ids"),
])
