"""A readable text summary of a run's artifacts (`spo inspect`)."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl

from stages.reports.summary import iteration_summary, summary_markdown
from stages.runtime.artifacts import read_manifest, read_table
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir

EXAMPLES = 3


def inspect_run(root: Path, iteration: int | None = None, stage: str | None = None) -> str:
    """Summary of the whole run, or of one iteration's artifacts (optionally only `stage`'s outputs)."""
    run = RunDir(Path(root))
    cfg = run.config()
    if iteration is None:
        return "\n".join([f"run {run.root} ({cfg.name}, {cfg.algorithm}, seed {cfg.seed})",
                          f"checkpoints: {run.checkpoints()}", "", summary_markdown(iteration_summary(run))])
    lines = [f"run {run.root}, iteration {iteration}"]
    for path in sorted(run.iteration_dir(iteration).glob("*.parquet")):
        manifest = read_manifest(path)
        report = manifest["report"]
        if stage is not None and report["stage"] != stage:
            continue
        frame = pl.from_arrow(read_table(path))
        lines += ["", (f"== {path.name}: {frame.height} rows, stage {report['stage']}, {report['seconds']} s, "
                       f"key {manifest['key']}"), f"   counters: {report['counters']}"]
        lines += _describe(path.stem, frame, run, iteration)
    return "\n".join(lines)


def _stats(frame: pl.DataFrame, column: str) -> str:
    s = frame[column]
    return f"{column}: mean {s.mean():.4f} std {s.std():.4f} min {s.min():.4f} max {s.max():.4f}"


def _describe(name: str, frame: pl.DataFrame, run: RunDir, iteration: int) -> list[str]:
    if frame.height == 0:
        return []
    if name == "rollouts":
        return [f"   {_stats(frame, 'reward')}", f"   accuracy {frame['correct'].mean():.4f}",
                *_segment_examples(frame, run, iteration)]
    if name == "values":
        return [f"   {_stats(frame, 'value')}",
                f"   shared {frame['shared'].sum()}, context-guarded {frame['context_guarded'].sum()}"]
    if name == "episodes":
        flat = frame.select(pl.col("advantages").explode(), pl.col("mask").explode())
        masked = flat.filter(pl.col("mask"))
        return [f"   masked tokens {masked.height} of {flat.height}",
                f"   {_stats(masked, 'advantages')}" if masked.height else "   no masked tokens"]
    if name in ("mc_samples", "eval"):
        return [f"   {_stats(frame, 'reward')}"]
    if name == "train_metrics":
        return [f"   {_stats(frame, c)}" for c in ("loss", "clipfrac", "approx_kl", "grad_norm")]
    return []


def _segment_examples(rollouts: pl.DataFrame, run: RunDir, iteration: int) -> list[str]:
    """A few decoded responses with ‖ at each boundary and their segment advantages, when available."""
    bpath = run.artifact(iteration, "boundaries")
    if not Path(str(bpath) + ".manifest.json").is_file():
        return []
    tokenizer = load_tokenizer(run.tokenizer())
    bounds = pl.from_arrow(read_table(bpath))
    joined = rollouts.join(bounds, on="rollout_id").head(EXAMPLES)
    lines = ["   examples (‖ marks a boundary):"]
    for row in joined.iter_rows(named=True):
        cuts = [0, *row["boundaries"], len(row["response_ids"])]
        pieces = [tokenizer.decode(row["response_ids"][a:b]) for a, b in itertools.pairwise(cuts) if b > a or a == 0]
        lines.append(f"   [{row['rollout_id']}] reward {row['reward']:+.2f}: {'‖'.join(pieces)!r}")
    return lines


def tree_text(root: Path, iteration: int, prompt_index: int) -> str:
    """One prompt's SPO-tree as indented text: each node's segment, value V and advantage A."""
    from spo.trees import root_id
    from stages.tree_advantages import node_values_and_advantages

    run = RunDir(Path(root))
    cfg = run.config()
    nodes = [n for d in range(1, len(cfg.tree.branching) + 1)
             for n in read_table(run.artifact(iteration, f"tree_nodes-{d}")).to_pylist()
             if n["prompt_index"] == prompt_index]
    if not nodes:
        raise ValueError(f"{run.iteration_dir(iteration)}: no tree nodes for prompt_index {prompt_index}")
    scored = node_values_and_advantages(nodes, cfg.advantage.method)
    prompt = read_table(run.artifact(iteration, "prompts")).to_pylist()[prompt_index]
    children = {}
    for node in nodes:
        children.setdefault(node["parent_id"], []).append(node)
    lines = [f"prompt {prompt_index} ({prompt['question_id']}, gold {prompt['answer']}): {prompt['prompt_text']!r}"]

    def draw(parent: str, indent: str) -> None:
        for node in children.get(parent, []):
            value, advantage = scored[node["node_id"]]
            leaf = f" reward {node['reward']:+.2f}" if node["leaf"] else ""
            lines.append(f"{indent}{node['node_id']}  V {value:.3f}  A {advantage:+.3f}{leaf}  {node['text']!r}")
            draw(node["node_id"], indent + "    ")

    draw(root_id(prompt_index), "  ")
    return "\n".join(lines)
