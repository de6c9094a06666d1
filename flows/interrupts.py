"""Ctrl-C and SIGTERM: stop within seconds, in one line, leaving a run that resumes.

The first SIGINT or SIGTERM raises `Interrupted` in the main thread, wherever it is: stages unwind through
their `finally` blocks (the run lock is released, folders written behind land or stay unfinished), Prefect
marks the flow run crashed on its server (which runs in a session of its own, so a terminal's Ctrl-C does
not reach it, flows/processes.py) and `spo` prints one line saying what finished and the command that
resumes. Prefect's own console lines about the crash are silenced: the line says it. Should the unwinding
take longer than `GRACE_SECONDS`, the process exits anyway, with the same line and status (128 + the signal);
a process killed this way leaves what a SIGKILL leaves, which a resume tidies (docs/architecture.md#interrupts).
A second signal during the unwinding is ignored. Prefect's flow engine installs a SIGTERM handler of its own
for the flow's duration; each flow takes SIGTERM back first thing (`reclaim`), so both signals stop the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE_SECONDS = 8.0
"""How long the unwinding may take before the process exits regardless (the promise is 10 s)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException, like KeyboardInterrupt, so no `except Exception` keeps it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum


@contextmanager
def interruptible(describe: Callable[[], str], on_signal: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` inside the block; `describe()` gives the line's text after
    the signal's name (what finished and how to resume); `on_signal()` runs first, from the handler (to stop
    child processes that worker threads wait for)."""
    state: dict = {}

    def line(signum: int) -> str:
        try:
            what = describe()
        except Exception as error:  # noqa: BLE001 (a damaged run must not hide the interrupt)
            what = f"({error})"
        return f"spo: interrupted by {signal.Signals(signum).name}: {what}"

    def hard_exit(signum: int) -> None:
        print(line(signum), file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def handler(signum, frame) -> None:
        if state:
            return
        state["signum"] = signum
        _silence_consoles()
        timer = threading.Timer(GRACE_SECONDS, hard_exit, args=(signum,))
        timer.daemon = True
        timer.start()
        state["timer"] = timer
        on_signal()
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _ACTIVE.append(handler)
    try:
        yield
    except BaseException as error:
        signum = state.get("signum")
        if signum is None:
            raise
        if not isinstance(error, (Interrupted, KeyboardInterrupt)) and not _is_termination(error):
            raise
        state["timer"].cancel()
        print(line(signum), file=sys.stderr, flush=True)
        raise Interrupted(signum) from None
    finally:
        _ACTIVE.remove(handler)
        for s, h in previous.items():
            signal.signal(s, h)


_ACTIVE: list[Callable] = []
"""The handler of the innermost `interruptible` block of this process, if any."""


def active_handler() -> Callable | None:
    """This process's interrupt handler while an `interruptible` block is open (for a component that installs
    SIGTERM handling of its own, such as Prefect's runner), else None."""
    return _ACTIVE[-1] if _ACTIVE else None


def reclaim() -> None:
    """Inside a flow: put this process's interrupt handler back for SIGTERM, which Prefect's flow engine took
    for the flow's duration (it restores ours when the flow ends). Does nothing outside `interruptible`."""
    if _ACTIVE and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _ACTIVE[-1])


def _is_termination(error: BaseException) -> bool:
    """Prefect turns SIGTERM into its TerminationSignal while a flow runs; after ours it is the same stop."""
    return type(error).__name__ == "TerminationSignal"


def _silence_consoles() -> None:
    """Stop every logging handler that writes to the terminal (Prefect's "Crash detected" lines among them);
    handlers that send to the Prefect API keep sending, so the UI still shows the crash."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)
