"""Stage `generate`: N rollouts per prompt from the iteration's checkpoint, graded and re-scored."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.rollouts import ROLLOUTS
from spo.rewards import informative, overlong_shaped
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import Draw, sample_draws

log = logging.getLogger(__name__)

SPEC = StageSpec(
    name="generate",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "prompts"), run.checkpoint(i)],
    writes=lambda run, i: [run.artifact(i, "rollouts")],
    config=("task", "sample", "model"),
)


def generate(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Sample, grade (docs/design.md#rewards) and teacher-force score (docs/design.md#probabilities) N responses
    per prompt; under dynamic sampling, drop the groups of equal rewards and draw more
    (docs/design.md#dynamic-sampling)."""
    return execute(SPEC, RunDir(Path(run)), iteration, _generate, force)


def _generate(ctx: StageContext):
    cfg, s = ctx.cfg, ctx.cfg.sample
    prompts = ctx.read("prompts").to_pylist()
    task = load_task(cfg)
    engine = load_policy(ctx.run.checkpoint(ctx.iteration), cfg)
    extra_draws = s.dynamic_max_draws if s.dynamic_sampling else 0
    groups, counters, drawn, dropped, draws = [], {}, 0, 0, 0
    # prompts lists the questions in draw order: the first draw takes questions_per_iteration of them, each
    # extra draw as many as groups are missing (a question's samples depend on its id alone, not on the draw)
    while draws == 0 or (len(groups) < s.questions_per_iteration and drawn < len(prompts)
                         and draws <= extra_draws):
        batch = prompts[drawn : drawn + s.questions_per_iteration - len(groups)]
        drawn, draws = drawn + len(batch), draws + 1
        sampled, sampling = _sampled_groups(ctx, engine, task, batch)
        counters = {name: counters.get(name, 0) + value for name, value in sampling.items()}
        for group in sampled:
            if s.dynamic_sampling and not informative([r["reward"] for r in group]):
                dropped += 1
            else:
                groups.append(group)
    rows = [row for group in groups for row in group]
    logps = engine.score([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], s.temperature)
    mismatch = 0.0
    for row, logp in zip(rows, logps):
        row["logp"] = logp.tolist()
        if row["engine_logp"] is not None and len(logp):
            mismatch = max(mismatch, float(np.max(np.abs(logp - np.asarray(row["engine_logp"])))))
    table = pa.Table.from_pylist(rows, schema=ROLLOUTS)
    rewards = np.array([r["reward"] for r in rows], dtype=np.float64)
    counters = {
        "rollouts/reward_mean": float(rewards.mean()) if len(rows) else 0.0,
        "rollouts/accuracy": float(np.mean([r["correct"] for r in rows])) if rows else 0.0,
        "rollouts/length_mean": float(np.mean([len(r["response_ids"]) for r in rows])) if rows else 0.0,
        "rollouts/truncated": sum(r["finish_reason"] == "length" for r in rows),
        "rollouts/logp_engine_vs_score_max_abs": mismatch,
        **counters,
    }
    if s.dynamic_sampling:  # the sampling counters above add up over the draws
        counters.update({"dynamic/questions": drawn, "dynamic/draws": draws - 1,
                         "dynamic/groups_kept": len(groups), "dynamic/groups_dropped": dropped,
                         "dynamic/groups_missing": s.questions_per_iteration - len(groups)})
    return {"rollouts": table}, counters


def _sampled_groups(ctx: StageContext, engine, task, prompts: list[dict]) -> tuple[list[list[dict]], dict]:
    """N graded rollouts (rows of rollouts.parquet without their scores) of each prompt, and the sampling
    counters."""
    cfg, s = ctx.cfg, ctx.cfg.sample
    draws = [Draw(p["prompt_ids"], (), s.samples_per_question, p["question_id"], p["question_id"])
             for p in prompts]
    requests, results, counters = sample_draws(engine, draws, s.max_new_tokens, s.context_size, s.temperature,
                                               s.top_p, cfg.seed, ctx.iteration, "generate",
                                               f"generate {ctx.iteration:04d}", "sample", ctx)
    groups = []
    for p, request, samples in zip(prompts, requests, results):
        example = task.example(p["question_id"])
        group = []
        for j, sample in enumerate(samples):
            reward, correct = sample.grade(task, example)
            group.append({
                "rollout_id": p["prompt_index"] * s.samples_per_question + j, "question_id": p["question_id"],
                "prompt_index": p["prompt_index"], "sample_index": j, "seed": request.seed,
                "prompt_ids": p["prompt_ids"], "response_ids": sample.token_ids, "response_text": sample.text,
                "finish_reason": sample.finish_reason, "correct": correct, "engine_logp": sample.logprobs,
                "reward": overlong_shaped(reward, len(sample.token_ids), s.max_new_tokens, s.overlong_buffer,
                                          s.overlong_penalty),
            })
        groups.append(group)
    return groups, counters
