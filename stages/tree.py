"""SPO-tree sampling as stages: `generate` grows depth 1, `resample-<d>` grows depth d (reference §3.1).

Expanding a node samples `branching[d-1]` children of its prefix in one request, so the siblings share
the parent's prefix (the engine prefills it once). Every level but the last is cut at `segment_tokens`
tokens; the last runs to `max_new_tokens`. Each depth is its own artifact, `tree_nodes-<d>.parquet`.

Leaf rules (reference §3.1):
- a child that stops on the stop token is a leaf graded on the whole response (all its segments);
- a last-level child cut by the length limit is a leaf graded on its own segment text, as the
  reference does (pitfall P10);
- a child whose prefix already fills the context is a leaf scoring the unfinished penalty (rule 8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa

from schemas.tree_nodes import TREE_NODES
from spo.seeds import derive_seed
from stages.artifacts import StageContext, StageReport, StageSpec, execute
from stages.progress import progress_bar
from stages.resources import fitted_request, load_policy, load_task, sampling_counters
from stages.run_dir import RunDir


def level_spec(depth: int) -> StageSpec:
    """The stage that grows depth `depth` (named `generate` for depth 1, `resample-<depth>` after)."""
    return StageSpec(
        name="generate" if depth == 1 else f"resample-{depth}",
        reads=lambda run, i: [run.artifact(i, "prompts"), run.checkpoint(i),
                              *(run.artifact(i, f"tree_nodes-{d}") for d in range(1, depth))],
        writes=lambda run, i: [run.artifact(i, f"tree_nodes-{depth}")],
        config=("task", "sample", "tree", "model"),
    )


def grow_level(depth: int):
    """The stage function growing depth `depth`: `stage(run, iteration, force=False) -> StageReport`."""

    def stage(run: Path, iteration: int, force: bool = False) -> StageReport:
        return execute(level_spec(depth), RunDir(Path(run)), iteration, lambda ctx: _grow(ctx, depth), force)

    stage.__doc__ = f"Sample depth {depth} of every prompt's tree."
    return stage


def tree_prefixes(prompts: list[dict], levels: list[list[dict]]) -> dict[str, list[int]]:
    """Response token ids from the prompt through each node (the node's own segment included)."""
    prefixes = {str(p["prompt_index"]): [] for p in prompts}
    for level in levels:
        for node in level:
            prefixes[node["node_id"]] = prefixes[node["parent_id"]] + list(node["segment_ids"])
    return prefixes


def _grow(ctx: StageContext, depth: int):
    cfg, s, tree = ctx.cfg, ctx.cfg.sample, ctx.cfg.tree
    last = depth == len(tree.branching)
    prompts = ctx.read("prompts").to_pylist()
    by_index = {str(p["prompt_index"]): p for p in prompts}
    levels = [ctx.read(f"tree_nodes-{d}").to_pylist() for d in range(1, depth)]
    responses = tree_prefixes(prompts, levels)
    parents = [str(p["prompt_index"]) for p in prompts] if depth == 1 else [
        n["node_id"] for n in levels[-1] if not n["leaf"]]
    task = load_task(cfg)
    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    tokenizer = engine.tokenizer
    budget = s.max_new_tokens if last else tree.segment_tokens

    def prefix(node_id: str) -> list[int]:
        return list(by_index[node_id.split(".")[0]]["prompt_ids"]) + responses[node_id]

    requests = [fitted_request(prefix(pid), tree.branching[depth - 1], budget, s.context_size, s.temperature,
                               s.top_p, derive_seed(cfg.seed, ctx.iteration, f"tree-{depth}", pid),
                               tokenizer.eos_token_id)
                for pid in parents]
    before = dataclasses.replace(engine.stats)
    with progress_bar(sum(r.n for r in requests), f"tree depth {depth} {ctx.iteration:04d}") as bar:
        results = engine.sample(requests, progress=bar.update)

    rows = []
    for pid, request, samples in zip(parents, requests, results):
        prompt = by_index[pid.split(".")[0]]
        example = task.example(prompt["question_id"])
        for j, sample in enumerate(samples):
            segment = list(sample.token_ids)
            full = len(request.prompt_ids) + len(segment) >= s.context_size
            row = {"node_id": f"{pid}.{j}", "parent_id": pid, "prompt_index": prompt["prompt_index"],
                   "question_id": prompt["question_id"], "depth": depth, "seed": request.seed,
                   "segment_ids": segment, "text": tokenizer.decode(segment, skip_special_tokens=True),
                   "finish_reason": sample.finish_reason, "leaf": True, "reward": None, "context_guarded": False}
            if sample.finish_reason == "stop":
                whole = tokenizer.decode(responses[pid] + segment, skip_special_tokens=True)
                row["reward"] = task.reward(whole, example, finished=True)
            elif last:
                row["reward"] = task.reward(row["text"], example, finished=True)
            elif full:
                row.update(reward=task.unfinished_penalty, context_guarded=True)
            else:
                row["leaf"] = False
            rows.append(row)
    logps = engine.score([prefix(r["parent_id"]) for r in rows], [r["segment_ids"] for r in rows], s.temperature)
    for row, logp in zip(rows, logps):
        row["logp"] = logp.tolist()
    return {f"tree_nodes-{depth}": pa.Table.from_pylist(rows, schema=TREE_NODES)}, {
        "tree/nodes": len(rows), "tree/leaves": sum(r["leaf"] for r in rows),
        "tree/context_guarded": sum(r["context_guarded"] for r in rows),
        **sampling_counters(engine, before, "sample"),
    }
