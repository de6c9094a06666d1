"""What stages load besides artifacts (the task, a tokenizer) and atomic folder writes; engines are in
stages/sampling/engines.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from spo.config import PromptConfig, RunConfig
from spo.tasks import TASKS, Example, Task, make_task
from stages.runtime.run_dir import REPO_ROOT, require_folder

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


def prompt_text_and_ids(prompt: PromptConfig, task: Task, tokenizer, example: Example) -> tuple[str, list[int]]:
    """The prompt of `example` as text (to read) and token ids (what is sampled from and trained on): the
    task's prompt text tokenized without special tokens, or with `prompt.chat_template` the tokenizer's chat
    template over the system message and the task's user message, whose ids are used as they come."""
    if not prompt.chat_template:
        text = task.prompt(example)
        return text, tokenizer(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": task.user_message(example)})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return text, list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


def prompt_ids(prompt: PromptConfig, task: Task, tokenizer, example: Example) -> list[int]:
    """The prompt's token ids (`prompt_text_and_ids`)."""
    return prompt_text_and_ids(prompt, task, tokenizer, example)[1]


def load_tokenizer(path: Path):
    """The tokenizer saved with a checkpoint, without loading any weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(require_folder(path, "the tokenizer"))


def write_folder_atomic(path: Path, write: Callable[[Path], None], aside: Path | None = None,
                        staged: list[tuple[Path, Path]] | None = None) -> None:
    """Let `write` fill a temporary folder beside `path`; then, or with `staged` later (a stage body's
    `ctx.staged`: stages/runtime/artifacts.py renames it with the stage's other outputs), move the folder it replaces
    (if any) to `aside` and rename the new one into place, so an interrupted recompute leaves the old one."""
    from stages.runtime.artifacts import (
        supersede,  # the manifest rules live there; artifacts imports this module
    )

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if staged is not None:
        staged.append((tmp, path))
        return
    supersede([path], aside)
    os.replace(tmp, path)
