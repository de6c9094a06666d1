"""Checkpoints written behind the flow: the train stage's folders saved by a background thread.

At real size a train stage's new weights and AdamW state are gigabytes (6 GB at 0.5B in float32), and
writing them takes seconds to minutes that no later stage needs to wait for: inside a flow the sampler
takes the new weights from memory (stages/sampling/engines.py), and the stage keys identify a train output by
the train stage's key, not by its bytes (stages/runtime/artifacts.py, `StageSpec.written_behind`). So within
`write_behind()` (the flow opens it) a stage hands such a folder to one background thread, which writes
it under a temporary name, renames it, hashes its files once and writes its manifest last, exactly as a
write in the foreground would, while the next stages run.

The folders are written from the live trainer's tensors, so whatever changes or reads them from disk
waits first: the next train stage (`wait()` before its optimizer steps), an engine that loads or
reloads the path, a sharded sampler whose workers load it, and the end of the block. A failed write
is raised at the first of these. A process killed before a folder lands leaves no manifest: the train
stage is unfinished and reruns on resume, making the same bytes under the same key
(docs/architecture.md#write-behind). Without an open block, `submit` writes in the foreground.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from stages.runtime.resources import write_folder_atomic

log = logging.getLogger(__name__)


class WriteBehind:
    """One background writer thread and the folders it has not yet landed (path -> identity, future)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spo-write-behind")
        self._pending: dict[Path, tuple[str, Future]] = {}

    def submit(self, path: Path, identity: str, write: Callable[[Path], None], finish: Callable[[], None],
               aside: Path | None = None) -> None:
        """Write the folder at `path` with `write` (atomically, moving the one it replaces to `aside`), then call
        `finish` (its manifest)."""
        self._pending[Path(path)] = (identity, self._executor.submit(_land, Path(path), write, finish, aside))

    def identity(self, path: Path) -> str | None:
        """The identity of a folder still being written (None: not written behind, or landed and waited for)."""
        identity, future = self._pending.get(Path(path), (None, None))
        if future is not None and future.done() and future.exception() is not None:
            self.wait(path)  # raises the write's error
        return identity

    def wait(self, path: Path | None = None) -> None:
        """Block until the folder at `path` (None: every folder) has landed; raise its write's error."""
        for pending in [Path(path)] if path is not None else list(self._pending):
            entry = self._pending.get(pending)
            if entry is not None:
                try:
                    entry[1].result()
                finally:
                    self._pending.pop(pending, None)

    def close(self, quiet: bool = False) -> None:
        """Land every folder and stop the thread; `quiet` logs a failed write instead of raising it."""
        try:
            self.wait()
        except Exception:
            if not quiet:
                raise
            log.exception("a checkpoint written behind failed; its train stage reruns on resume")
        finally:
            self._executor.shutdown(wait=True)


def _land(path: Path, write: Callable[[Path], None], finish: Callable[[], None], aside: Path | None) -> None:
    write_folder_atomic(path, write, aside=aside)
    finish()


_WRITER: ContextVar[WriteBehind | None] = ContextVar("spo_write_behind", default=None)


@contextmanager
def write_behind() -> Iterator[WriteBehind]:
    """Write the folders that stages `submit` in the background until the block ends, then land them all."""
    writer = WriteBehind()
    token = _WRITER.set(writer)
    try:
        yield writer
    except BaseException:
        writer.close(quiet=True)  # land what finished stages made; the block's own error goes on
        raise
    else:
        writer.close()
    finally:
        _WRITER.reset(token)


def submit(path: Path, identity: str, write: Callable[[Path], None], finish: Callable[[], None],
           aside: Path | None = None) -> None:
    """Write a folder behind (inside `write_behind()`) or now, then call `finish`."""
    writer = _WRITER.get()
    if writer is None:
        _land(Path(path), write, finish, aside)
    else:
        writer.submit(path, identity, write, finish, aside)


def pending_identity(path: Path) -> str | None:
    """The identity of the folder at `path` if it is still being written behind in this process."""
    writer = _WRITER.get()
    return None if writer is None else writer.identity(path)


def wait(path: Path | None = None) -> None:
    """Block until the folder at `path` (None: every folder being written behind) has landed."""
    writer = _WRITER.get()
    if writer is not None:
        writer.wait(path)
