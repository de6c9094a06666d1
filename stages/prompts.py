"""Stage `prompts`: draw the iteration's training questions, format and tokenize them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.prompts import PROMPTS
from spo.seeds import derive_seed
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task, load_tokenizer, prompt_text_and_ids
from stages.runtime.run_dir import RunDir

log = logging.getLogger(__name__)

SPEC = StageSpec(
    name="prompts",
    module=__name__,
    reads=lambda run, i: [run.tokenizer()],
    writes=lambda run, i: [run.artifact(i, "prompts")],
    config=("task", "prompt", "sample.questions_per_iteration", "sample.context_size",
            "sample.dynamic_sampling", "sample.dynamic_max_draws"),
)


def prompts(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Draw `questions_per_iteration` train questions (seeded by run seed and iteration,
    docs/design.md#question-sampling); under dynamic sampling, as many more for each extra draw it may make
    (docs/design.md#dynamic-sampling)."""
    return execute(SPEC, RunDir(Path(run)), iteration, _prompts, force)


def _prompts(ctx: StageContext):
    cfg = ctx.cfg
    task = load_task(cfg)
    tokenizer = load_tokenizer(ctx.run.tokenizer())
    pool = task.examples("train")
    rng = np.random.default_rng(derive_seed(cfg.seed, ctx.iteration, "prompts", "draw"))
    s = cfg.sample
    wanted = s.questions_per_iteration * (1 + (s.dynamic_max_draws if s.dynamic_sampling else 0))
    rows, too_long = [], 0
    for index in rng.permutation(len(pool)):
        if len(rows) == wanted:
            break
        example = pool[int(index)]
        text, ids = prompt_text_and_ids(cfg.prompt, task, tokenizer, example)
        if len(ids) >= cfg.sample.context_size:  # no room for a response (reference: max_question_length)
            too_long += 1
            continue
        rows.append({"prompt_index": len(rows), "question_id": example.id, "question": example.question,
                     "answer": example.answer, "prompt_text": text, "prompt_ids": ids})
    table = pa.Table.from_pylist(rows, schema=PROMPTS)
    return {"prompts": table}, {"prompts/too_long": too_long, "prompts/pool": len(pool)}
