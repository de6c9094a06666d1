"""SPO-tree sampling as stages: `tree-<d>` grows depth d of every prompt's tree (docs/design.md#tree-sampling).

Expanding a node samples `branching[d-1]` children of its prefix in one request, so the siblings share
the parent's prefix (the engine prefills it once). Every level but the last is cut at
`partition.segment_tokens` tokens (the "fixed_length" partition: M in the paper); the last runs to
`max_new_tokens`. Each depth is its own artifact, `tree_nodes-<d>.parquet`.

Leaf rules:
- a child that stops on the stop token is a leaf graded on the whole response (all its segments);
- a last-level child cut by the length limit is a leaf graded on its own segment text, as the
  reference does;
- a child whose prefix already fills the context is a leaf scoring the unfinished penalty
  (docs/design.md#context-guard).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from schemas.tree_nodes import TREE_NODES
from spo.trees import root_id, tree_prefixes
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import Draw, sample_draws


def level_spec(depth: int) -> StageSpec:
    """The stage that grows depth `depth`, `tree-<depth>` (the name `stages.runtime.registry.tree_level` lists)."""
    return StageSpec(
        name=f"tree-{depth}",
        module=__name__,
        reads=lambda run, i: [run.artifact(i, "prompts"), run.checkpoint(i),
                              *(run.artifact(i, f"tree_nodes-{d}") for d in range(1, depth))],
        writes=lambda run, i: [run.artifact(i, f"tree_nodes-{depth}")],
        config=("task", "sample", "tree", "partition.segment_tokens", "model"),
    )


def grow_level(depth: int):
    """The stage function growing depth `depth`: `stage(run, iteration, force=False) -> StageReport`."""

    def stage(run: Path, iteration: int, force: bool = False) -> StageReport:
        return execute(level_spec(depth), RunDir(Path(run)), iteration, lambda ctx: _grow(ctx, depth), force)

    stage.__doc__ = f"Sample depth {depth} of every prompt's tree."
    return stage


def _grow(ctx: StageContext, depth: int):
    cfg, s, tree = ctx.cfg, ctx.cfg.sample, ctx.cfg.tree
    last = depth == len(tree.branching)
    prompts = ctx.read("prompts").to_pylist()
    levels = [ctx.read(f"tree_nodes-{d}").to_pylist() for d in range(1, depth)]
    responses = tree_prefixes(prompts, levels)
    # (node id, its prompt) of every node expanded at this depth
    parents = [(root_id(p["prompt_index"]), p) for p in prompts] if depth == 1 else [
        (n["node_id"], prompts[n["prompt_index"]]) for n in levels[-1] if not n["leaf"]]
    task = load_task(cfg)
    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    budget = s.max_new_tokens if last else cfg.partition.segment_tokens
    draws = [Draw(list(prompt["prompt_ids"]) + responses[pid], responses[pid], tree.branching[depth - 1], pid,
                  prompt["question_id"]) for pid, prompt in parents]
    requests, results, counters = sample_draws(engine, draws, budget, s.context_size, s.temperature, s.top_p,
                                               cfg.seed, ctx.iteration, f"tree-{depth}",
                                               f"tree depth {depth} {ctx.iteration:04d}", "sample", ctx)
    rows = []
    for (pid, prompt), request, samples in zip(parents, requests, results):
        example = task.example(prompt["question_id"])
        for j, sample in enumerate(samples):
            segment = sample.token_ids
            full = len(request.prompt_ids) + len(segment) >= s.context_size
            text = engine.tokenizer.decode(segment, skip_special_tokens=True)
            row = {"node_id": f"{pid}.{j}", "parent_id": pid, "prompt_index": prompt["prompt_index"],
                   "question_id": prompt["question_id"], "depth": depth, "seed": request.seed,
                   "segment_ids": segment, "text": text, "finish_reason": sample.finish_reason, "leaf": True,
                   "reward": None, "correct": False, "context_guarded": False}
            if sample.finish_reason == "stop":
                row["reward"], row["correct"] = sample.grade(task, example)
            elif last:  # cut by the length limit: graded on its own segment, as the reference
                row["reward"], row["correct"] = task.grade(text, example, finished=True)
            elif full:
                row.update(reward=task.unfinished_penalty, context_guarded=True)
            else:
                row["leaf"] = False
            rows.append(row)
    logps = engine.score([list(prompts[r["prompt_index"]]["prompt_ids"]) + responses[r["parent_id"]] for r in rows],
                         [r["segment_ids"] for r in rows], s.temperature)
    for row, logp in zip(rows, logps):
        row["logp"] = logp.tolist()
    return {f"tree_nodes-{depth}": pa.Table.from_pylist(rows, schema=TREE_NODES)}, {
        "tree/nodes": len(rows), "tree/leaves": sum(r["leaf"] for r in rows),
        "tree/context_guarded": sum(r["context_guarded"] for r in rows), **counters,
    }
