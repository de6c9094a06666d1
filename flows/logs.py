"""What the console shows of Prefect's logs: by default the project's own lines (one per iteration, the
summaries), warnings and errors; Prefect's INFO lines about each flow and task run ("Beginning flow run",
"View at ...", "Finished in state Completed()", one per stage and iteration) only with `spo --verbose`.
The Prefect API, and so the UI, gets every line either way: only the console handler filters.

Prefect builds its console handler from `PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS` when it is imported
(prefect/logging/logging.yml may be overridden item by item from the environment); `spo` sets it to
`QuietConsoleHandler` before Prefect loads, and `spo --verbose` sets `SPO_VERBOSE=1`. Both are environment
variables, so every process a command starts makes the same choice: the temporary server, `spo compare`'s
child runs, the flow runs `spo serve` starts, torchrun workers (docs/architecture.md#console).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import prefect
from prefect.logging.handlers import PrefectConsoleHandler

VERBOSE = "SPO_VERBOSE"
"""Environment variable: "1" shows Prefect's own flow- and task-run INFO lines on the console."""
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
"""The loggers of flow and task runs: Prefect's engine and the project's flows (`get_run_logger`) share them."""
PREFECT_CODE = str(Path(prefect.__file__).parent) + os.sep


class PrefectRunInfo(logging.Filter):
    """Drops an INFO (or DEBUG) record of a flow or task run that Prefect's own code wrote, unless SPO_VERBOSE=1;
    the project's lines on the same loggers (written from flows/) and every warning and error pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        engine_info = (record.levelno < logging.WARNING and record.name.startswith(RUN_LOGGERS)
                       and record.pathname.startswith(PREFECT_CODE))
        return not engine_info or os.environ.get(VERBOSE) == "1"


RUN_INFO = PrefectRunInfo()


class QuietConsoleHandler(PrefectConsoleHandler):
    """Prefect's console handler (same format, colours and stream) with `PrefectRunInfo`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.addFilter(RUN_INFO)


def quiet_console() -> None:
    """In a process whose Prefect logging is configured already (a test, a program that calls `spo`'s main),
    give its console handlers the same filter."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(RUN_INFO)
