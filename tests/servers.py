"""A real local Prefect server for the tests that need one (served schedules, the UI in a browser).

`prefect_server(home)` starts `spo server` on a free 127.0.0.1 port with its own PREFECT_HOME, waits
(bounded) until its API answers, yields the API address and the environment that points a child process
at it, and stops it with SIGTERM (kill on timeout). Its log goes to `home/server.log`, which failures print.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SPO_CLI = [sys.executable, "-m", "flows.cli"]


@dataclass(frozen=True)
class Server:
    api: str
    """The API address, e.g. http://127.0.0.1:PORT/api (the UI is served at the same host and port)."""
    env: dict[str, str]
    """The environment for a child process that talks to this server."""
    logs: list[Path]
    """Log files whose tails a failure shows; a test appends the logs of the processes it starts."""
    process: subprocess.Popen
    """The server process (stopped when the `prefect_server` block ends)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def log_tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs if p.exists())


def wait_for(check, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log_tails(logs)}")


def status_code(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


@contextmanager
def prefect_server(home: Path, **env: str) -> Iterator[Server]:
    """`spo server` on a free port with PREFECT_HOME `home`; `env` adds variables for its children."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", **env}
    logs = [home / "server.log"]
    home.mkdir(parents=True, exist_ok=True)
    with logs[0].open("w") as log:
        process = subprocess.Popen([*SPO_CLI, "server", "--port", str(port)], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: status_code(f"{api}/health") == 200, 120, "the Prefect server", logs)
            yield Server(api, env, logs, process)
        finally:
            stop(process)
