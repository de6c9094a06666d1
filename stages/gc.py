"""Retention: `spo gc DIR --keep-last N` removes old checkpoints, never one that is still needed.

Kept always: checkpoint 0 (the frozen KL reference policy and the tokenizer every stage reads), the
newest (the next iteration trains from it), and every checkpoint with an evaluation
(`iterations/<NNNN>/eval.parquet`), so reported accuracies keep their weights. Of the rest, the
newest `keep_last` stay. A checkpoint goes with its manifest, the manifest first: interrupted in
between, the folder is unfinished (never read) and the next `gc` removes it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stages.artifacts import manifest_path
from stages.lock import run_lock
from stages.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What `gc` removed and why it kept the rest."""

    removed: list[int] = field(default_factory=list)
    """Checkpoints removed (folder and manifest)."""
    unfinished: list[str] = field(default_factory=list)
    """Checkpoint folders without a manifest, older than the newest finished one (left by an interrupted gc)."""
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
        reasons[0] = "KL reference and tokenizer"
    return reasons


def gc(run: Path, keep_last: int, dry_run: bool = False) -> GcReport:
    """Remove old checkpoints of `run`, keeping the newest `keep_last` and those still needed (module docstring).

    Raises:
        stages.lock.RunLockedError: another process writes to the run.
    """
    if keep_last < 0:
        raise ValueError(f"--keep-last must be >= 0, got {keep_last}")
    run_dir = RunDir(Path(run))
    with run_lock(run_dir.root, "gc"):
        checkpoints = run_dir.checkpoints()
        report = GcReport(kept=keep_reasons(run_dir, checkpoints, keep_last))
        for index in checkpoints:
            if index not in report.kept:
                report.removed.append(index)
                report.freed_bytes += _remove(run_dir.checkpoint(index), dry_run)
        folders = run_dir.root / "checkpoints"
        newest = checkpoints[-1] if checkpoints else -1
        for folder in sorted(folders.glob("[0-9][0-9][0-9][0-9]")) if folders.is_dir() else []:
            if int(folder.name) < newest and not manifest_path(folder).exists():
                report.unfinished.append(folder.name)
                report.freed_bytes += _remove(folder, dry_run)
    log.info("gc %s: removed %s, unfinished %s, kept %s, %.1f MB%s", run_dir.root, report.removed,
             report.unfinished, report.kept, report.freed_bytes / 1e6, " (dry run)" if dry_run else "")
    return report


def _remove(folder: Path, dry_run: bool) -> int:
    """Remove a checkpoint's manifest, then its folder; return the bytes freed."""
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    if not dry_run:
        manifest_path(folder).unlink(missing_ok=True)
        if folder.is_dir():
            shutil.rmtree(folder)
    return size
