"""SPO-tree stage `tree-advantages`: node values, edge advantages and the replay buffer.

Every node is an edge (parent prefix -> segment). V(leaf) = reward, V(node) = mean of its children's
values, A = V(node) - V(parent) ("tree") or divided by the parent's children std + 1e-8
("tree-normalized"), docs/design.md#tree-values;
edges with A exactly 0 and empty segments are dropped and counted. New edges join the replay buffer
(`replay.parquet` of the previous iteration); edges `replay_max_age` iterations old leave it; each
question gives at most `replay_per_question` edges, drawn uniformly, to this iteration's episodes; the
rest wait in this iteration's `replay.parquet`, so a resumed run has the same buffer
(docs/design.md#replay-buffer).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.episodes import EPISODES
from schemas.replay import REPLAY
from spo.advantages import tree_values_and_advantages
from spo.seeds import derive_seed
from spo.trees import root_id, tree_prefixes
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir
from stages.training.episodes import MaskRule, episode_row


def spec(depth: int) -> StageSpec:
    """The tree-advantages stage of a tree of `depth` levels."""
    return StageSpec(
        name="tree-advantages",
        module=__name__,
        reads=lambda run, i: [run.artifact(i, "prompts"), run.tokenizer(),
                              *(run.artifact(i, f"tree_nodes-{d}") for d in range(1, depth + 1)),
                              *([run.artifact(i - 1, "replay")] if i > 0 else [])],
        writes=lambda run, i: [run.artifact(i, "episodes"), run.artifact(i, "replay")],
        config=("tree", "advantage", "partition.tau"),
    )


def tree_advantages(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Edge episodes from the iteration's trees plus the replay buffer."""
    root = RunDir(Path(run))
    depth = len(root.config().tree.branching)
    return execute(spec(depth), root, iteration, _tree_advantages, force)


def node_values_and_advantages(nodes: list[dict], method: str) -> dict[str, tuple[float, float]]:
    """node_id -> (value, advantage) for the nodes of one prompt's tree (its root is the prompt)."""
    ids = [root_id(nodes[0]["prompt_index"])] + [n["node_id"] for n in nodes]
    index = {node_id: k for k, node_id in enumerate(ids)}
    parents = [None] + [index[n["parent_id"]] for n in nodes]
    rewards = [None] + [n["reward"] if n["leaf"] else None for n in nodes]
    values, advantages = tree_values_and_advantages(parents, rewards, method=method)
    return {node_id: (values[k], advantages[k]) for node_id, k in index.items() if k > 0}


def _tree_advantages(ctx: StageContext):
    cfg, tree, a = ctx.cfg, ctx.cfg.tree, ctx.cfg.advantage
    prompts = ctx.read("prompts").to_pylist()
    prompt_ids = {p["prompt_index"]: p["prompt_ids"] for p in prompts}
    levels = [ctx.read(f"tree_nodes-{d}").to_pylist() for d in range(1, len(tree.branching) + 1)]
    responses = tree_prefixes(prompts, levels)
    rule = MaskRule.of(cfg, load_tokenizer(ctx.run.tokenizer()).eos_token_id)
    by_prompt = defaultdict(list)
    for node in (n for level in levels for n in level):
        by_prompt[node["prompt_index"]].append(node)

    edges, dropped_zero, dropped_empty = [], 0, 0
    for nodes in by_prompt.values():
        scored = node_values_and_advantages(nodes, a.method)
        for node in nodes:
            value, advantage = scored[node["node_id"]]
            if not node["segment_ids"]:
                dropped_empty += 1
                continue
            if advantage == 0.0:
                dropped_zero += 1
                continue
            edges.append(episode_row(rule, node["node_id"], node["question_id"], ctx.iteration, "tree_edge",
                                     list(prompt_ids[node["prompt_index"]]) + responses[node["parent_id"]],
                                     node["segment_ids"], advantage, node["logp"], value))

    leaves = [n for level in levels for n in level if n["leaf"]]
    buffer = ctx.read("replay", ctx.iteration - 1).to_pylist() if ctx.iteration > 0 else []
    fresh = [e for e in buffer if ctx.iteration - e["iteration"] < tree.replay_max_age]
    pool = defaultdict(list)
    for edge in fresh + edges:
        pool[edge["question_id"]].append(edge)
    rng = random.Random(derive_seed(cfg.seed, ctx.iteration, "replay", "take"))
    taken, waiting = [], []
    for question in sorted(pool):
        candidates = pool[question]
        chosen = set(rng.sample(range(len(candidates)), min(tree.replay_per_question, len(candidates))))
        for k, edge in enumerate(candidates):
            (taken if k in chosen else waiting).append(edge)
    for table in (taken, waiting):
        for k, edge in enumerate(table):
            edge["episode_id"] = k
    return {"episodes": pa.Table.from_pylist(taken, schema=EPISODES),
            "replay": pa.Table.from_pylist(waiting, schema=REPLAY)}, {
        "tree/edges": len(edges), "tree/dropped_zero_advantage": dropped_zero,
        "tree/dropped_empty": dropped_empty, "replay/expired": len(buffer) - len(fresh),
        "replay/taken_old": sum(e["iteration"] < ctx.iteration for e in taken),
        "replay/waiting": len(waiting), "episodes/count": len(taken),
        "rollouts/reward_mean": float(np.mean([n["reward"] for n in leaves])),
        "rollouts/accuracy": float(np.mean([n["correct"] for n in leaves])),
    }
