"""What stages load besides artifacts (the task, a tokenizer) and atomic folder writes; engines are in
stages/engines.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from spo.config import RunConfig
from spo.tasks import TASKS, Task, make_task
from stages.run_dir import REPO_ROOT

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
"""Default home of the benchmark data: the read-only copy beside the checkout."""


def load_task(cfg: RunConfig) -> Task:
    """The configured task; a task with a `data_folder` reads `task.data` (default: its folder in the data folder
    beside the checkout, data/README.md)."""
    options = dict(cfg.task.options)
    folder = getattr(TASKS.get(cfg.task.name), "data_folder", None)
    if folder is not None:
        options.setdefault("path", cfg.task.data or str(SHARED_DATA / folder))
    return make_task(cfg.task.name, **options)


def load_tokenizer(path: Path):
    """The tokenizer saved with a checkpoint, without loading any weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def write_folder_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary folder beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if path.exists():
        raise FileExistsError(f"{path}: exists; move it aside first (stages/artifacts.py supersedes outputs)")
    os.replace(tmp, path)
