"""Run a function under a wall-clock limit, from the main thread or any other (graders call sympy this way).

In the main thread the limit is a SIGALRM timer. Signals reach only the main thread, so elsewhere the
call runs in a `SympyWorker`: a plain `python -c` child process (it never re-imports the caller's
`__main__`) that is killed and restarted when a call overruns.
"""

import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Self


class _Overrun(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that sympy's `except Exception` cannot swallow it."""


def _raise_overrun(signum: int, frame: Any) -> None:
    raise _Overrun()


def _call_with_alarm(function: Callable, args: tuple, seconds: float) -> Any:
    """Run function(*args) in the main thread with a SIGALRM deadline; restore any earlier timer after."""
    previous_handler = signal.signal(signal.SIGALRM, _raise_overrun)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        try:
            return function(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm landing here is still caught below
    except _Overrun:
        raise TimeoutError(f"{function.__name__} overran its {seconds} s limit") from None
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            remaining = max(previous_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


_WORKER_PROGRAM = (
    "import os, pickle, sys; sys.path[:0] = pickle.load(sys.stdin.buffer); "
    "from spo.time_limit import _serve; _serve(sys.stdin.buffer, os.fdopen(os.dup(1), 'wb'))"
)


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    """One length-prefixed pickle; raises EOFError when the other side has gone."""
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("pipe closed before a full message arrived")
    return pickle.loads(stream.read(int.from_bytes(header, "little")))


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Worker loop: answer (function, args) requests until stdin closes. Errors go back as text."""
    os.dup2(2, 1)  # a stray print in the child must not corrupt the reply stream
    _send(replies, ("ok", "ready"))
    while True:
        try:
            function, args = _receive(requests)
        except EOFError:
            return
        try:
            _send(replies, ("ok", function(*args)))
        except Exception as error:  # noqa: BLE001 (any failure is reported to the parent, which raises it)
            _send(replies, ("error", f"{type(error).__name__}: {error}"))


class SympyWorker:
    """Owns one child Python process that runs comparisons, so a time limit also works off the main thread.

    An overrun kills the child (sympy cannot be interrupted from another thread) and the next call
    starts a fresh one. The child is a plain `python -c` program, so it never re-imports the caller's
    `__main__`. Calls are serialised, so threads may share one worker. Use it as a context manager or
    call `close()`.

    >>> with SympyWorker() as worker:
    ...     worker.call(pow, (2, 10), seconds=60.0)
    1024
    """

    def __init__(self, start_timeout: float = 120.0):
        """Args: start_timeout: seconds a new child may take to import sympy and report ready."""
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._process.stdin.write(pickle.dumps(sys.path))  # read by a bare pickle.load in the child
        self._process.stdin.flush()
        self._reply_within(self.start_timeout, "start")

    def _reply_within(self, seconds: float, what: str) -> Any:
        ready, _, _ = select.select([self._process.stdout], [], [], seconds)
        if not ready:
            self.close()
            raise TimeoutError(f"{what} overran its {seconds} s limit in the sympy worker")
        try:
            status, value = _receive(self._process.stdout)
        except EOFError as error:
            code = self._process.poll()
            self.close()
            raise RuntimeError(f"sympy worker exited (code {code}) during {what}") from error
        if status != "ok":
            raise RuntimeError(f"sympy worker failed in {what}: {value}")
        return value

    def call(self, function: Callable, args: tuple, seconds: float) -> Any:
        """Return function(*args) computed in the child; TimeoutError (and a restart) past `seconds`.

        Args:
            function: a module-level function (it is pickled by name).
            args: its positional arguments (pickled).
            seconds: the wall-clock limit for this call.
        """
        with self._lock:
            if self._process is None:
                self._start()
            _send(self._process.stdin, (function, args))
            return self._reply_within(seconds, function.__name__)

    def close(self) -> None:
        """Stop the child process (a later call starts a new one)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdin.close()
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def call_with_time_limit(
    function: Callable, args: tuple, seconds: float, worker: SympyWorker | None = None
) -> Any:
    """Return function(*args), or raise TimeoutError after `seconds`.

    Args:
        function: a module-level function (it is pickled when a worker runs it).
        args: its positional arguments.
        seconds: the wall-clock limit.
        worker: run it in this child process; None uses SIGALRM in the main thread and a one-shot
            `SympyWorker` elsewhere (signals only reach the main thread).

    >>> call_with_time_limit(pow, (2, 10), seconds=1.0)
    1024
    """
    if worker is not None:
        return worker.call(function, args, seconds)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _call_with_alarm(function, args, seconds)
    with SympyWorker() as one_shot:
        return one_shot.call(function, args, seconds)
