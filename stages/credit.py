"""Stage `credit`: the credit-assignment probe on the iteration's episodes (spo/credit.py).

Runs on tasks whose correct response is unique (`Task.unique_target`, e.g. arith). Each episode's
response path is aligned with the target to find its first wrong token, and its negative advantage
mass is split into the part on that token, on the correct tokens before it and after it. The
advantages are those of episodes.parquet: what the advantage estimator assigned, before the train
stage whitens them. See docs/design.md#credit-probe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.credit import CREDIT
from spo.config import PromptConfig
from spo.credit import STOP, credit_split, first_wrong_token
from spo.tasks import Task
from stages.runtime.artifacts import StageContext, StageReport, StageSpec, execute
from stages.runtime.resources import load_task, load_tokenizer, prompt_ids
from stages.runtime.run_dir import RunDir

SPEC = StageSpec(
    name="credit",
    module=__name__,
    reads=lambda run, i: [run.artifact(i, "episodes"), run.tokenizer()],
    writes=lambda run, i: [run.artifact(i, "credit")],
    config=("task", "prompt", "partition.tau"),
)


def credit(run: Path, iteration: int, force: bool = False) -> StageReport:
    """Where the negative advantage of the iteration's episodes lands relative to the first wrong token."""
    return execute(SPEC, RunDir(Path(run)), iteration, _credit, force)


def _credit(ctx: StageContext):
    task = load_task(ctx.cfg)
    tokenizer = load_tokenizer(ctx.run.tokenizer())
    rows = credit_rows(ctx.read("episodes").to_pylist(), task, tokenizer, ctx.cfg.prompt)
    return {"credit": pa.Table.from_pylist(rows, schema=CREDIT)}, credit_counters(rows, ctx.cfg.partition.tau)


def credit_rows(episodes: list[dict], task: Task, tokenizer, prompt: PromptConfig = PromptConfig()) -> list[dict]:
    """One credit.parquet row per episode (rows of episodes.parquet, train-split questions)."""
    if not task.unique_target:
        raise ValueError(f"task {task.name!r} has no unique target response (Task.unique_target is false): "
                         f"the credit probe cannot find a first wrong token")
    prompt_length: dict[str, int] = {}
    rows = []
    for e in episodes:
        example = task.example(e["question_id"])
        if e["question_id"] not in prompt_length:
            prompt_length[e["question_id"]] = len(prompt_ids(prompt, task, tokenizer, example))
        earlier = e["prompt_ids"][prompt_length[e["question_id"]]:]  # a tree edge's earlier segments
        pieces = token_pieces(earlier + e["response_ids"], tokenizer)
        wrong = first_wrong_token(pieces, task.target(example))
        local = None if wrong is None else wrong - len(earlier)
        inside = local is not None and 0 <= local < len(e["response_ids"])
        split = credit_split(e["advantages"], e["mask"], len(earlier), wrong)
        rows.append({
            "episode_id": e["episode_id"], "question_id": e["question_id"], "kind": e["kind"],
            "path_offset": len(earlier), "first_wrong": wrong,
            "first_wrong_prob": float(np.exp(e["old_logp"][local])) if inside else None,
            "first_wrong_trained": inside and bool(e["mask"][local]),
            "negative_mass": split.negative, "on_first_wrong": split.on_first_wrong,
            "on_correct": split.on_correct, "after_first_wrong": split.after,
            "correct_advantage_sum": split.correct_sum, "correct_trained": split.correct_count,
        })
    return rows


def token_pieces(ids: list[int], tokenizer) -> list[str | None]:
    """The text each token adds to the decoded response (`STOP` for the stop token), by decoding growing
    prefixes, so tokenizers whose tokens decode differently alone (a SentencePiece leading space) align."""
    pieces, text = [], ""
    for end, t in enumerate(ids, start=1):
        if t == tokenizer.eos_token_id:
            pieces.append(STOP)
            continue
        longer = tokenizer.decode(ids[:end], skip_special_tokens=True)
        pieces.append(longer[len(os.path.commonprefix([text, longer])):])
        text = longer
    return pieces


def credit_counters(rows: list[dict], tau: float) -> dict[str, float]:
    """The probe's numbers for the stage report (None-free: 0.0 where nothing was measured)."""
    negative = sum(r["negative_mass"] for r in rows)
    holding = [r for r in rows if r["first_wrong_prob"] is not None]
    trained = sum(r["correct_trained"] for r in rows)

    def share(key: str) -> float:
        return sum(r[key] for r in rows) / negative if negative > 0 else 0.0

    return {
        "credit/negative_share_first_wrong": share("on_first_wrong"),
        "credit/negative_share_correct": share("on_correct"),
        "credit/negative_share_after": share("after_first_wrong"),
        "credit/correct_advantage_mean": sum(r["correct_advantage_sum"] for r in rows) / trained if trained else 0.0,
        "credit/first_wrong_episodes": len(holding),
        "credit/first_wrong_trained_share": (sum(r["first_wrong_trained"] for r in holding) / len(holding)
                                             if holding else 0.0),
        "credit/first_wrong_confident_share": (sum(r["first_wrong_prob"] >= tau for r in holding) / len(holding)
                                               if holding else 0.0),
    }
