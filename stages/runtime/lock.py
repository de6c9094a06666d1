"""The run-directory lock: one writer at a time, a clear error naming the holder, stale locks taken over.

A flow, a stage or `spo gc` holds `<run>/.lock` while it writes. The file holds JSON
`{host, pid, since, purpose}`; it is created with `os.link` from a finished temporary file, which
fails when the lock exists (the atomic exclusive create of O_EXCL, but never a half-written holder).

- **Re-entrant per process:** the flow holds the lock while its stages run in the same process; a
  stage then finds its own pid in the file and goes on without taking or releasing it.
- **Stale:** a holder on this host whose pid is gone (or a zombie) is dead. Its lock is removed under
  `flock` on the stale file, after checking that the path still names that same file with that same
  holder, so of two processes taking over at once exactly one wins. A holder on another host is never
  judged: the error says how to remove the file by hand.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
ATTEMPTS = 5
"""Create-or-take-over rounds before giving up (each lost round means another process moved first)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory."""

    host: str
    pid: int
    since: str
    """UTC time the lock was taken, ISO 8601."""
    purpose: str
    """What it writes, e.g. "flow spo-run" or "stage train 0003"."""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since} ({self.purpose})"


class RunLockedError(RuntimeError):
    """Another live process writes to the run directory."""

    def __init__(self, path: Path, holder: LockHolder, reason: str):
        self.path, self.holder = path, holder
        super().__init__(f"{path}: run directory is locked by {holder.describe()}; {reason}")


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_NAME


def read_holder(root: Path) -> LockHolder | None:
    """The current holder of the run's lock, or None when it is free."""
    path = lock_path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: lock file is not JSON ({error}); expected host, pid, since, purpose") from error
    missing = {"host", "pid", "since", "purpose"} - set(data)
    if missing:
        raise ValueError(f"{path}: lock file lacks fields {sorted(missing)}; expected host, pid, since, purpose")
    return LockHolder(data["host"], int(data["pid"]), data["since"], data["purpose"])


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # no procfs (not Linux): os.kill is all we know; with procfs it just ended
        return not Path("/proc/self").is_dir()
    return state != "Z"


@contextmanager
def run_lock(root: Path, purpose: str) -> Iterator[LockHolder]:
    """Hold the run directory's lock for the `with` block (re-entrant within one process).

    Raises:
        RunLockedError: a live process (or one on another host) holds it; the message names it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    me = LockHolder(socket.gethostname(), os.getpid(),
                    datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"), purpose)
    holder = _acquire(root, me)
    if holder != me:  # the lock is already ours, taken further out in this process
        yield holder
        return
    try:
        yield me
    finally:
        _release(root, me)


def _acquire(root: Path, me: LockHolder) -> LockHolder:
    """Create the lock as `me`, or return the holder when it is this process; stale locks are taken over."""
    path = lock_path(root)
    for _ in range(ATTEMPTS):
        if _create(path, me):
            return me
        holder = read_holder(root)
        if holder is None:  # released between our create and our read
            continue
        if holder.host == me.host and holder.pid == me.pid:
            return holder
        if holder.host != me.host:
            raise RunLockedError(path, holder, f"this is host {me.host}, so whether that process lives cannot be "
                                               f"checked; if it does not, remove {path}")
        if process_alive(holder.pid):
            raise RunLockedError(path, holder, "wait for it to finish (or stop it)")
        _remove_stale(path, holder)
    raise RuntimeError(f"{path}: could not take the lock in {ATTEMPTS} rounds; other processes keep taking it")


def _create(path: Path, me: LockHolder) -> bool:
    """Atomically create the lock file holding `me`; False when a lock exists."""
    tmp = path.with_name(f"{path.name}.{me.host}.{me.pid}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(asdict(me)))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _remove_stale(path: Path, stale: LockHolder) -> None:
    """Remove the lock file iff it is still the same file holding `stale` (serialised by flock on it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return
        if same_file and read_holder(path.parent) == stale:
            path.unlink()
            log.warning("%s: took over the stale lock of %s: that process is gone", path, stale.describe())
    finally:
        os.close(fd)


def _release(root: Path, me: LockHolder) -> None:
    holder = read_holder(root)
    if holder != me:
        log.error("%s: lock was replaced while held (now %s); left as it is", lock_path(root),
                  holder.describe() if holder else "free")
        return
    lock_path(root).unlink()
