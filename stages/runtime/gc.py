"""Retention: what a run keeps on disk (docs/architecture.md#retention).

`spo gc DIR --keep-last N` removes old checkpoints, never one still needed: checkpoint 0 (the frozen KL
reference policy), the newest (the next iteration trains from it), and every checkpoint with an
evaluation (`iterations/<NNNN>/eval.parquet`), so reported accuracies keep their weights. Of the rest,
the newest `keep_last` stay; PPO's critic and the optimizer states of a removed checkpoint go with it.
A run prunes as it goes with the `retention` config: the optimizer states (the policy's and the
critic's) of all but the newest iterations (only a resume reads them), and optionally checkpoints as
gc does.

A removed artifact keeps its manifest as a tombstone: the content hash it had, and why and when it went.
Stage keys that read it stay computable and the stages that made it or read it stay finished, so a
run with removed checkpoints still resumes; only a stage that must read the removed bytes refuses
to run. The tombstone is written before the files go: interrupted in between, the files are orphans
that the next prune removes.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from spo.config import RetentionConfig
from stages.runtime.artifacts import manifest_path
from stages.runtime.lock import run_lock
from stages.runtime.run_dir import RunDir, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What `gc` removed and why it kept the rest."""

    removed: list[int] = field(default_factory=list)
    """Checkpoints removed (their files; the manifest stays as a tombstone)."""
    optimizer_states: list[int] = field(default_factory=list)
    """Optimizer states removed (the policy's; PPO's critic's go with them, their bytes counted below)."""
    unfinished: list[str] = field(default_factory=list)
    """Folders without a live manifest (left by an interrupted write or gc), removed."""
    kept: dict[int, str] = field(default_factory=dict)
    """Checkpoint -> the reason it stays."""
    freed_bytes: int = 0


def keep_reasons(run: RunDir, checkpoints: list[int], keep_last: int) -> dict[int, str]:
    """Why each kept checkpoint stays; checkpoints absent from the result may go."""
    reasons: dict[int, str] = {}
    for index in checkpoints[-keep_last:] if keep_last else []:
        reasons[index] = f"one of the last {keep_last}"
    for index in checkpoints:
        if run.artifact(index, "eval").exists() or manifest_path(run.artifact(index, "eval")).exists():
            reasons[index] = "evaluated"
    if checkpoints:
        reasons[checkpoints[-1]] = "newest"
    if 0 in checkpoints:
        reasons[0] = "KL reference"
    written = [index for index in checkpoints if index > 0 and _live(run.optimizer_state(index))]
    if written:  # where a train stage without its optimizer state replays from (stages/train.py)
        reasons.setdefault(written[-1], "newest optimizer state")
    return reasons


def gc(run: Path, keep_last: int, dry_run: bool = False) -> GcReport:
    """Remove old checkpoints of `run`, keeping the newest `keep_last` and those still needed (module docstring).

    Raises:
        stages.runtime.lock.RunLockedError: another process writes to the run.
    """
    if keep_last < 0:
        raise ValueError(f"--keep-last must be >= 0, got {keep_last}")
    run_dir = RunDir(Path(run))
    with run_lock(run_dir.root, "gc"):
        report = _prune(run_dir, keep_last, None, dry_run)
    log.info("gc %s: removed %s, unfinished %s, kept %s, %.1f MB%s", run_dir.root, report.removed,
             report.unfinished, report.kept, report.freed_bytes / 1e6, " (dry run)" if dry_run else "")
    return report


def retain(run: RunDir, retention: RetentionConfig) -> GcReport:
    """Prune as the run's `retention` config says (after each iteration; the caller holds the run lock)."""
    return _prune(run, retention.checkpoints or None, retention.optimizer_states or None, False)


def _prune(run: RunDir, keep_checkpoints: int | None, keep_states: int | None, dry_run: bool) -> GcReport:
    """Tombstone and remove checkpoints (keeping `keep_checkpoints` and the needed ones; None: all) and
    optimizer states (keeping the newest `keep_states`; None: all), then orphaned folders."""
    checkpoints = run.checkpoints()
    report = GcReport(kept=keep_reasons(run, checkpoints, keep_checkpoints or 0))
    if keep_checkpoints is not None:
        for index in checkpoints:
            if index not in report.kept:
                report.removed.append(index)
                for path in _of_iteration(run, index):
                    if _live(path):
                        report.freed_bytes += _remove(path, "checkpoint retention", dry_run)
    newest = checkpoints[-1] if checkpoints else 0
    for state_of in (run.optimizer_state, run.critic_optimizer_state):
        states = sorted(i for i in range(1, newest + 1) if _live(state_of(i)))
        for index in states[:-keep_states] if keep_states is not None else []:
            if state_of == run.optimizer_state:
                report.optimizer_states.append(index)
            report.freed_bytes += _remove(state_of(index), "optimizer-state retention", dry_run)
    folders = run.root / "checkpoints"
    for folder in sorted(folders.iterdir()) if folders.is_dir() else []:
        if folder.is_dir() and re.fullmatch(r"\d{4}(-critic)?(-optimizer)?", folder.name) and _orphan(folder, checkpoints):
            report.unfinished.append(folder.name)
            report.freed_bytes += _size(folder)
            if not dry_run:
                shutil.rmtree(folder)
    return report


def _of_iteration(run: RunDir, index: int) -> list[Path]:
    """What goes with checkpoint `index`: the policy, its optimizer state, PPO's critic and its state."""
    return [run.checkpoint(index), run.optimizer_state(index), run.critic(index),
            run.critic_optimizer_state(index)]


def _live(path: Path) -> bool:
    """A finished artifact whose files are still there (a manifest that is not a tombstone)."""
    mpath = manifest_path(path)
    return mpath.is_file() and "removed" not in json.loads(mpath.read_text())


def _orphan(folder: Path, checkpoints: list[int]) -> bool:
    """A folder behind a tombstone, or without a manifest and older than the newest checkpoint (a write
    that was interrupted; the newest may still be being written)."""
    mpath = manifest_path(folder)
    if mpath.is_file():
        return "removed" in json.loads(mpath.read_text())
    return bool(checkpoints) and int(folder.name[:4]) < checkpoints[-1]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _remove(folder: Path, reason: str, dry_run: bool) -> int:
    """Turn a folder's manifest into a tombstone, then delete the folder; return the bytes freed."""
    size = _size(folder)
    if not dry_run:
        manifest = json.loads(manifest_path(folder).read_text())
        manifest.pop("files", None)  # what stays: the hash, the key, the report, and why it went
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_json_atomic(manifest_path(folder), {**manifest, "removed": f"{reason}, {stamp}"})
        if folder.is_dir():
            shutil.rmtree(folder)
    return size
