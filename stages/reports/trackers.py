"""Experiment trackers: TensorBoard and Weights & Biases, fed from a run's stored artifacts.

What a tracker logs for step i is read from iteration i's folder (the stage reports in its manifests, the
PPO update's metrics, the episodes), never from memory: a rerun or a resumed run logs the same values.
TensorBoard gets one event file per iteration, written to a temporary name and renamed over the old
one, never appended to; W&B keeps a ledger of the steps it logged and skips them. Either way nothing is
logged twice (docs/architecture.md#trackers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator

from spo.config import RunConfig
from stages.reports.summary import iteration_reports, iteration_row
from stages.runtime.artifacts import manifest_path, read_table
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import RunDir

UPDATE_COLUMNS = ("loss", "loss_policy", "loss_kl", "ratio_mean", "clipfrac", "approx_kl", "grad_norm", "lr")
"""train_metrics columns logged as their mean over the iteration's optimizer steps (`update/<column>`)."""


def iteration_scalars(run: RunDir, i: int) -> dict[str, float]:
    """Step i's scalars: the summary row that `spo inspect` prints (`summary/<column>`), every numeric counter
    of every stage report in the folder (under its own name, e.g. `loss/total`, `credit/...`), each stage's
    seconds (`seconds/<stage>`) and the PPO update's means (`update/<column>`)."""
    scalars = {f"summary/{k}": float(v) for k, v in iteration_row(run, i).items()
               if k != "iteration" and _number(v)}
    for stage, report in iteration_reports(run, i).items():
        scalars.update({k: float(v) for k, v in report["counters"].items() if _number(v)})
        scalars[f"seconds/{stage}"] = float(report["seconds"])
    metrics = run.artifact(i, "train_metrics")
    if manifest_path(metrics).is_file():
        table = read_table(metrics)
        if table.num_rows:
            for column in UPDATE_COLUMNS:
                values = table.column(column).to_pylist()
                scalars[f"update/{column}"] = sum(values) / len(values)
    return scalars


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def completion_rows(run: RunDir, i: int, count: int) -> list[dict]:
    """The first `count` episodes of iteration i, decoded: the text with every run of trained tokens (the
    loss mask) in ⟦ ⟧ followed by its advantage, e.g. ` 3+4=⟦8⟧{-0.50}`. Empty when the folder has none."""
    episodes = run.artifact(i, "episodes")
    if not manifest_path(episodes).is_file():
        return []
    tokenizer = load_tokenizer(run.tokenizer())
    rows = []
    for episode in read_table(episodes).slice(0, count).to_pylist():
        pieces, run_ids, run_key = [], [], None
        for token, advantage, trained in zip(episode["response_ids"], episode["advantages"], episode["mask"]):
            key = (trained, round(advantage, 4) if trained else None)
            if key != run_key and run_ids:
                pieces.append(_piece(tokenizer, run_ids, run_key))
                run_ids = []
            run_key = key
            run_ids.append(token)
        if run_ids:
            pieces.append(_piece(tokenizer, run_ids, run_key))
        rows.append({"iteration": i, "question_id": episode["question_id"], "kind": episode["kind"],
                     "reward": round(float(episode["reward"]), 4),
                     "prompt": tokenizer.decode(episode["prompt_ids"]), "completion": "".join(pieces)})
    return rows


def _piece(tokenizer, ids: list[int], key: tuple) -> str:
    text = tokenizer.decode(ids)
    trained, advantage = key
    return f"⟦{text}⟧{{{advantage:+.2f}}}" if trained else text


class TensorBoardTracker:
    """Event files under `<run>/tensorboard/`, one per iteration: `events.out.tfevents.<iteration>.spo`."""

    def __init__(self, run: RunDir):
        self.folder = run.root / "tensorboard"

    def log(self, step: int, scalars: dict[str, float], completions: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        tmp = self.folder / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        writer = SummaryWriter(log_dir=str(tmp))
        for tag, value in sorted(scalars.items()):
            writer.add_scalar(tag, value, global_step=step)
        if completions:
            writer.add_text("completions", _markdown(completions), global_step=step)
        writer.close()
        (written,) = tmp.glob("events.out.tfevents.*")
        written.replace(self.folder / f"events.out.tfevents.{step:08d}.spo")  # replaces a rerun's file whole
        shutil.rmtree(tmp)

    def close(self) -> None:
        pass


class WandbTracker:
    """One W&B run per run folder (its id is derived from the folder, so a resumed run continues it);
    `<run>/wandb/logged.json` lists the steps already logged."""

    def __init__(self, run: RunDir, cfg: RunConfig):
        import wandb

        self.ledger = run.root / "wandb" / "logged.json"
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        self.logged = set(json.loads(self.ledger.read_text())) if self.ledger.is_file() else set()
        run_id = hashlib.sha256(str(run.root.resolve()).encode()).hexdigest()[:16]
        self.wandb = wandb
        self.run = wandb.init(project=cfg.log.wandb_project, name=cfg.name, id=run_id, resume="allow",
                              dir=str(run.root), config=cfg.to_dict())

    def log(self, step: int, scalars: dict[str, float], completions: list[dict]) -> None:
        if step in self.logged:
            return
        data: dict = dict(scalars)
        if completions:
            columns = list(completions[0])
            data["completions"] = self.wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in completions])
        self.run.log(data, step=step)
        self.logged.add(step)
        tmp = self.ledger.with_name(f".{self.ledger.name}.tmp")
        tmp.write_text(json.dumps(sorted(self.logged)))
        tmp.replace(self.ledger)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers a run's `log` config turns on; `log_iteration` feeds them step i."""

    def __init__(self, run: RunDir, trackers: list):
        self.run_dir, self.trackers = run, trackers

    def log_iteration(self, i: int) -> None:
        if not self.trackers:
            return
        cfg = self.run_dir.config()
        scalars = iteration_scalars(self.run_dir, i)
        every = cfg.log.samples_every
        completions = completion_rows(self.run_dir, i, cfg.log.samples) if every and i % every == 0 else []
        for tracker in self.trackers:
            tracker.log(i, scalars, completions)


@contextlib.contextmanager
def open_trackers(run: RunDir) -> Iterator[Trackers]:
    """The run's trackers, open for a flow run and closed with it."""
    cfg = run.config()
    trackers = []
    try:
        if cfg.log.tensorboard:
            trackers.append(TensorBoardTracker(run))
        if cfg.log.wandb:
            trackers.append(WandbTracker(run, cfg))
        yield Trackers(run, trackers)
    finally:
        for tracker in trackers:
            tracker.close()


def _markdown(rows: list[dict]) -> str:
    columns = list(rows[0])
    cells = [[str(r[c]).replace("|", "\\|").replace("\n", "⏎") for c in columns] for r in rows]
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
                     + ["| " + " | ".join(row) + " |" for row in cells])
