"""Stage `evaluate`: accuracy of a checkpoint on held-out (test) questions, greedy and mean over samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.eval_results import EVAL_RESULTS
from spo.config import PromptConfig
from spo.policy import Engine
from spo.seeds import derive_seed
from spo.tasks import Example, Task
from stages.artifacts import StageContext, StageReport, StageSpec, execute
from stages.engines import load_policy
from stages.resources import load_task, prompt_ids
from stages.run_dir import RunDir
from stages.sampling import fitted_request, sample_continuations
from stages.shards import sharding

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


def answer_rows(engine: Engine, task: Task, prompt: PromptConfig, examples: Sequence[Example], mode: str, n: int,
                temperature: float, max_new_tokens: int, context_size: int, seed: int, desc: str,
                shards=None) -> list[dict]:
    """Sample `n` answers per example (temperature 0 decodes greedily) and grade them."""
    tokenizer = engine.tokenizer
    prompts = [prompt_ids(prompt, task, tokenizer, e) for e in examples]
    # iteration 0 in every seed: each checkpoint is scored on the same draws (common random numbers), so
    # accuracies of two checkpoints differ by their weights, not by the dice
    requests = [fitted_request(p, n, max_new_tokens, context_size, temperature, 1.0,
                               derive_seed(seed, 0, f"evaluate-{mode}", e.id), tokenizer.eos_token_id)
                for p, e in zip(prompts, examples)]
    results, _ = sample_continuations(engine, requests, [[]] * len(requests), desc, "eval", shards)
    rows = []
    for example, samples in zip(examples, results):
        for j, sample in enumerate(samples):
            reward, correct = sample.grade(task, example)
            rows.append({"question_id": example.id, "mode": mode, "sample_index": j, "response_text": sample.text,
                         "finish_reason": sample.finish_reason, "reward": reward, "correct": correct,
                         "n_tokens": len(sample.token_ids)})
    return rows


def _evaluate(ctx: StageContext):
    cfg, e = ctx.cfg, ctx.cfg.eval
    task = load_task(cfg)
    examples = task.examples("test")
    examples = examples[: e.questions] if e.questions else examples
    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    limits = (cfg.sample.max_new_tokens, cfg.sample.context_size, cfg.seed)
    rows, counters = [], {"eval/questions": len(examples)}
    shards = sharding(ctx, [x.id for x in examples])
    if e.greedy:
        greedy = answer_rows(engine, task, cfg.prompt, examples, "greedy", 1, 0.0, *limits, f"eval-greedy {ctx.iteration:04d}",
                             shards)
        counters["eval/accuracy_greedy"] = float(np.mean([r["correct"] for r in greedy]))
        rows += greedy
    if e.samples_per_question:
        sampled = answer_rows(engine, task, cfg.prompt, examples, "sample", e.samples_per_question, e.temperature, *limits,
                              f"eval-sample {ctx.iteration:04d}", shards)
        counters["eval/accuracy_sample"] = float(np.mean([r["correct"] for r in sampled]))
        counters["eval/reward_sample"] = float(np.mean([r["reward"] for r in sampled]))
        rows += sampled
    for row in rows:
        row["checkpoint"] = ctx.iteration
    return {"eval": pa.Table.from_pylist(rows, schema=EVAL_RESULTS)}, counters
