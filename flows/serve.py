"""Serving the run and evaluation flows on schedules (the local Prefect server they need: flows/server.py).

    spo server --port 4200                             # SQLite database and UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api   # in the shell that serves
    spo serve data/runs/tiny --run-interval 10800 --more 5 --eval-cron "0 2 * * *"

The temporary server a lone process starts has no scheduler, so `serve` refuses to start without
PREFECT_API_URL. Each scheduled flow run is a new process; one `serve` process runs one flow run at a
time (`limit`), so its training and evaluation runs never compete for the run-directory lock.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.runner import Runner
from prefect.settings import get_current_settings

from flows import interrupts
from flows.processes import PREFECT_RESULTS
from flows.spo_eval import spo_eval
from flows.spo_run import spo_run
from stages.runtime.run_dir import RunDir

FLOWS = {"run": spo_run, "eval": spo_eval}
"""Served flow name -> flow."""


@dataclass(frozen=True)
class Schedule:
    """When to run one of `FLOWS` on a run directory."""

    flow: str
    """"run" (continue training) or "eval" (evaluate the newest unevaluated checkpoint)."""
    cron: str | None = None
    """Cron expression, e.g. "0 2 * * *" (02:00 every night, server time zone UTC)."""
    interval: float | None = None
    """Seconds between runs (instead of `cron`)."""
    more: int | None = None
    """"run" only: iterations each run trains after the trained ones; None runs up to the configured count."""

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise ValueError(f"unknown flow {self.flow!r}; choose one of {sorted(FLOWS)}")
        if (self.cron is None) == (self.interval is None):
            raise ValueError(f"flow {self.flow!r}: give exactly one of cron and interval, "
                             f"got cron={self.cron!r}, interval={self.interval!r}")
        if self.more is not None and self.flow != "run":
            raise ValueError(f"flow {self.flow!r} takes no `more` (got {self.more}); only 'run' trains")


def deployment(run: Path, schedule: Schedule) -> RunnerDeployment:
    """The deployment `<flow>/<run folder name>`, loading its flow by module path (works from any cwd)."""
    parameters: dict = {"run": str(Path(run).resolve())}
    if schedule.more is not None:
        parameters["more"] = schedule.more
    return FLOWS[schedule.flow].to_deployment(
        name=Path(run).resolve().name, cron=schedule.cron, interval=schedule.interval, parameters=parameters,
        entrypoint_type=EntrypointType.MODULE_PATH, description=f"{schedule.flow} of {Path(run).resolve()}")


def serve(run: Path, schedules: list[Schedule], limit: int = 1) -> None:
    """Serve the scheduled flows on `run` until SIGTERM (or Ctrl-C); at most `limit` flow runs at a time."""
    if not schedules:
        raise ValueError("nothing to serve: give a schedule for the run flow, the eval flow or both")
    if not get_current_settings().api.url:
        raise ValueError("PREFECT_API_URL is not set: schedules need a running Prefect server. Start one with "
                           "`spo server --port 4200`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    if not RunDir(Path(run)).config_path.is_file():
        raise FileNotFoundError(f"{RunDir(Path(run)).config_path}: no run here; create it first with `spo run`")
    # each scheduled flow run is a new process: it keeps its cached task results in the run folder too
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(Path(run).resolve() / PREFECT_RESULTS)
    runner = Runner(pause_on_shutdown=True, limit=limit)  # as prefect.serve builds it
    for s in schedules:
        runner.add_deployment(deployment(run, s))
    # SIGTERM stops serving as Ctrl-C does (flows/interrupts.py): the runner pauses the schedules on its way out
    # and spo prints one line; Prefect's own handler would exit 0 with a warning of its own
    runner.handle_sigterm = interrupts.active_handler() or runner.handle_sigterm
    print(f"serving {', '.join(f'{s.flow} of {Path(run).resolve()}' for s in schedules)}; Ctrl-C stops", flush=True)
    asyncio.run(runner.start())
