"""Stage `warmstart`: make checkpoint 0, optionally by supervised fine-tuning on reference solutions.

A tiny model trained from scratch on arithmetic jumps from under 10% to over 90% accuracy at an
unpredictable step (docs/design.md#warm-start), so SFT runs by steps and stops once held-out greedy accuracy
enters `warmstart.band`; a check past the band rewinds to the last check below it and trains on with checks twice
as close, until one lands inside.
Held-out questions are the last `eval_questions` of the train split and are never trained on.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.warmstart_metrics import WARMSTART_METRICS
from spo.config import RunConfig
from spo.policy import Engine
from spo.policy.tiny import TINY_CHAT_TEMPLATE, create_tiny_checkpoint
from spo.seeds import derive_seed
from spo.sft import sft_step
from spo.tasks import Task
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.progress import progress_bar
from stages.runtime.resources import load_task, prompt_ids, write_folder_atomic
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import answer_rows

log = logging.getLogger(__name__)

SPEC = StageSpec(
    name="warmstart",
    module=__name__,
    reads=lambda run, i: [],
    writes=lambda run, i: [run.checkpoint(0), run.tokenizer(), run.artifact(0, "warmstart")],
    config=("model", "task", "prompt", "warmstart", "sample.max_new_tokens", "sample.context_size"),
)
WARMUP_STEPS = 50


def warmstart(run: Path, iteration: int = 0, force: bool = False) -> StageReport:
    """Build or load the initial policy, fine-tune it into the accuracy band, save it as checkpoint 0."""
    return execute(SPEC, RunDir(Path(run)), 0, _warmstart, force)


def initial_policy(cfg: RunConfig, task: Task, scratch: Path) -> Engine:
    """The configured model, or a tiny one built from the task's text in `scratch`."""
    if cfg.model.path:
        return load_policy(Path(cfg.model.path), cfg, role="trainer")
    tiny = cfg.model.tiny
    texts = [*task.corpus("train"), *task.corpus("test")]
    create_tiny_checkpoint(scratch, texts, tokenizer_kind=tiny.tokenizer, bpe_vocab_size=tiny.bpe_vocab_size,
                           hidden_size=tiny.hidden_size, num_layers=tiny.num_layers, num_heads=tiny.num_heads,
                           intermediate_size=tiny.intermediate_size,
                           max_position_embeddings=tiny.max_position_embeddings,
                           chat_template=TINY_CHAT_TEMPLATE if cfg.prompt.chat_template else None,
                           seed=derive_seed(cfg.seed, 0, "warmstart", "init") % 2**31)
    return load_policy(scratch, cfg, role="trainer")


def _warmstart(ctx: StageContext):
    cfg, w = ctx.cfg, ctx.cfg.warmstart
    task = load_task(cfg)
    scratch = ctx.run.root / ".warmstart-init"
    engine = initial_policy(cfg, task, scratch)
    rows, counters = [], {}
    if w.enabled:
        rows, counters = fine_tune(engine, task, cfg)
    write_folder_atomic(ctx.output("0000"), engine.save, staged=ctx.staged)
    write_folder_atomic(ctx.output("tokenizer"), engine.tokenizer.save_pretrained, staged=ctx.staged)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"warmstart": pa.Table.from_pylist(rows, schema=WARMSTART_METRICS)}, counters


def fine_tune(engine: Engine, task: Task, cfg: RunConfig) -> tuple[list[dict], dict]:
    """SFT by steps until held-out greedy accuracy is inside the band (see the module docstring).

    A check past the band rewinds to the last check below it (weights and optimizer state) and trains on with
    checks twice as close, so a jump that crosses the whole band between two checks is caught inside it; the
    rows of the abandoned steps stay in the log, and the steps after a rewind repeat the step numbers from the
    check it went back to. `max_steps` counts every update, abandoned ones too.
    """
    w, tokenizer, model = cfg.warmstart, engine.tokenizer, engine.model
    pool = task.examples("train")
    train, held_out = pool[: -w.eval_questions], pool[-w.eval_questions:]
    rng = random.Random(derive_seed(cfg.seed, 0, "warmstart", "batches"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.lr, betas=(0.9, 0.98), weight_decay=0.01)
    low, high = w.band
    rows, below, selected, rewinds = [], None, None, 0
    step, every, near = 0, w.eval_every, False
    next_check = every
    model.train()
    with progress_bar(w.max_steps, "warmstart") as bar:
        for update in range(1, w.max_steps + 1):
            step += 1
            lr = w.lr_near if near and w.lr_near else w.lr * min(1.0, step / WARMUP_STEPS)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = [train[rng.randrange(len(train))] for _ in range(w.batch_size)]
            prompts = [prompt_ids(cfg.prompt, task, tokenizer, e) for e in batch]
            targets = [tokenizer(task.target(e), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                       for e in batch]
            loss = sft_step(model, optimizer, prompts, targets, tokenizer.pad_token_id)
            rows.append({"step": step, "loss": loss, "lr": lr, "accuracy": None, "selected": False})
            bar.update(1)
            if step < next_check and update != w.max_steps:
                continue
            model.eval()
            answers = answer_rows(engine, task, cfg.prompt, held_out, "greedy", 1, 0.0, cfg.sample.max_new_tokens,
                                  cfg.sample.context_size, cfg.seed, "warmstart-check")
            model.train()
            accuracy = float(np.mean([a["correct"] for a in answers]))
            rows[-1]["accuracy"] = accuracy
            bar.set_postfix(loss=f"{loss:.3f}", held_out=f"{accuracy:.2f}")
            if low <= accuracy <= high:
                selected = rows[-1]
                break
            if accuracy > high:
                if below is None or every == 1:
                    break  # nothing to rewind to, or the band is narrower than one step: keep the last below
                rewinds += 1
                step, every = below["row"]["step"], max(1, every // 2)
                model.load_state_dict(below["model"])
                optimizer.load_state_dict(below["optimizer"])
                next_check = step + every
                continue
            near = near or accuracy >= low / 2
            every = max(1, (w.eval_every_near if near and w.eval_every_near else w.eval_every) >> rewinds)
            next_check = step + every
            below = {"row": rows[-1], "model": copy.deepcopy(model.state_dict()),
                     "optimizer": copy.deepcopy(optimizer.state_dict())}
    if selected is None and below is not None and accuracy > high:
        selected = below["row"]
        model.load_state_dict(below["model"])
    model.eval()
    selected = selected or rows[-1]
    selected["selected"] = True
    chosen_accuracy = selected["accuracy"]
    log.info("warm start: kept step %d, held-out greedy accuracy %.3f (band %s, %d rewind(s))",
             selected["step"], chosen_accuracy, w.band, rewinds)
    return rows, {"warmstart/steps": len(rows), "warmstart/selected_step": selected["step"],
                  "warmstart/held_out_accuracy": chosen_accuracy, "warmstart/rewinds": rewinds}
