"""Stage `evaluate`: accuracy of a checkpoint on held-out (test) questions, greedy and mean over samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.eval_results import EVAL_RESULTS
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import answer_rows

SPEC = StageSpec(
    name="evaluate",
    module=__name__,
    reads=lambda run, c: [run.checkpoint(c)],
    writes=lambda run, c: [run.artifact(c, "eval")],
    config=("task", "prompt", "eval", "model", "sample.max_new_tokens", "sample.context_size"),
)


def evaluate(run: Path, checkpoint: int, force: bool = False) -> StageReport:
    """Grade the answers of checkpoint `checkpoint` to the first `eval.questions` test questions."""
    return execute(SPEC, RunDir(Path(run)), checkpoint, _evaluate, force)


def _evaluate(ctx: StageContext):
    cfg, e = ctx.cfg, ctx.cfg.eval
    task = load_task(cfg)
    examples = task.examples("test")
    examples = examples[: e.questions] if e.questions else examples
    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    limits = (cfg.sample.max_new_tokens, cfg.sample.context_size, cfg.seed)
    rows, counters = [], {"eval/questions": len(examples)}
    if e.greedy:
        greedy = answer_rows(engine, task, cfg.prompt, examples, "greedy", 1, 0.0, *limits, f"eval-greedy {ctx.iteration:04d}",
                             ctx)
        counters["eval/accuracy_greedy"] = float(np.mean([r["correct"] for r in greedy]))
        rows += greedy
    if e.samples_per_question:
        sampled = answer_rows(engine, task, cfg.prompt, examples, "sample", e.samples_per_question, e.temperature, *limits,
                              f"eval-sample {ctx.iteration:04d}", ctx)
        counters["eval/accuracy_sample"] = float(np.mean([r["correct"] for r in sampled]))
        counters["eval/reward_sample"] = float(np.mean([r["reward"] for r in sampled]))
        rows += sampled
    for row in rows:
        row["checkpoint"] = ctx.iteration
    return {"eval": pa.Table.from_pylist(rows, schema=EVAL_RESULTS)}, counters
