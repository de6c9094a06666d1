"""Child processes that end with their parent: the temporary Prefect server, a comparison's runs, the ranks
of a distributed train stage (docs/architecture.md#processes)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal a process gets when the thread that started it exits."""


def die_with_parent() -> None:
    """`preexec_fn` of a child: SIGTERM it when its parent dies (Linux; elsewhere nothing is arranged).

    The signal follows the *thread* that started the child, so start children from a thread that waits
    for them (the main thread, or a task thread blocked in `subprocess.run`).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
