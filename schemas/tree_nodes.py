"""`tree_nodes-<d>.parquet`: the nodes of depth d of the SPO-tree of every prompt (docs/design.md#tree-sampling)."""

import pyarrow as pa

from schemas.contract import TOKEN_FLOATS, TOKEN_IDS, artifact_schema, column

TREE_NODES = artifact_schema("tree_nodes", 2, "tree nodes of one depth, one row per node (a sampled segment)", [
    column("node_id", pa.string(), "path from the prompt: '<prompt_index>.<child>.<child>...'"),
    column("parent_id", pa.string(), "the parent's node_id; '<prompt_index>' for children of the prompt"),
    column("prompt_index", pa.int32(), "row of prompts.parquet"),
    column("question_id", pa.string(), "the task example's stable id"),
    column("depth", pa.int32(), "1 for children of the prompt"),
    column("seed", pa.int64(), "seed of the parent's expansion request (its children are its n samples)"),
    column("segment_ids", TOKEN_IDS, "the sampled segment's token ids"),
    column("text", pa.string(), "decoded segment (for people)"),
    column("finish_reason", pa.string(), "'stop' (a leaf) or 'length' (segment budget or context reached)"),
    column("leaf", pa.bool_(), "not expanded further"),
    column("reward", pa.float32(), "leaf reward (see stages/tree.py for the grading rules); null for inner nodes",
           nullable=True),
    column("correct", pa.bool_(), "a leaf whose graded text has the right final answer (false for inner "
                                  "nodes and context-guarded leaves)"),
    column("context_guarded", pa.bool_(), "a leaf because its prefix fills the context "
                                          "(docs/design.md#context-guard)"),
    column("logp", TOKEN_FLOATS, "teacher-forced log-probs of the segment given its prefix, at the temperature"),
])
