"""`rollouts.parquet`: N sampled responses per prompt, graded and re-scored by teacher forcing."""

import pyarrow as pa

from schemas.contract import TOKEN_FLOATS, TOKEN_IDS, artifact_schema, column

ROLLOUTS = artifact_schema("rollouts", 1, "sampled responses, one row per rollout", [
    column("rollout_id", pa.int64(), "unique in the iteration: prompt_index * N + sample_index"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("prompt_index", pa.int32(), "row of prompts.parquet"),
    column("sample_index", pa.int32(), "which of the N samples of the prompt"),
    column("seed", pa.int64(), "seed of the sampling request (derived from run seed, iteration, question)"),
    column("prompt_ids", TOKEN_IDS, "prompt token ids"),
    column("response_ids", TOKEN_IDS, "sampled response token ids, the stop token included when it stopped"),
    column("response_text", pa.string(), "decoded response, special tokens removed (for people and grading)"),
    column("finish_reason", pa.string(), "'stop' (stop token) or 'length' (max_new_tokens or context)"),
    column("reward", pa.float32(), "task reward of the response (unfinished and multiple-answer penalties)"),
    column("correct", pa.bool_(), "the extracted answer equals the gold answer"),
    column("logp", TOKEN_FLOATS, "log-prob of each response token by teacher forcing, logits / temperature, "
           "float32: cutpoints, the probability mask and the PPO old log-probs use these (docs/design.md#probabilities)"),
    column("engine_logp", TOKEN_FLOATS, "the engine's own sampling log-probs, to measure the mismatch",
           nullable=True),
])
