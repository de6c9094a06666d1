"""Processes a run starts end with it: its temporary Prefect server and the child runs of `spo compare`.

Prefect, given no `PREFECT_API_URL`, starts a temporary API server as a child process and stops it at
exit; a run killed with SIGKILL never reaches that exit, and the server kept serving, orphaned. So
`spo` starts the temporary server itself, with the same command Prefect uses, and asks Linux to
SIGTERM it when its parent dies (`PR_SET_PDEATHSIG`); child runs are started the same way. See
docs/architecture.md#processes.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stages.sampling.launch import die_with_parent

PREFECT_DATABASE = ".prefect"
"""Folder of a run's temporary Prefect database, inside the run."""
PREFECT_RESULTS = ".prefect-results"
"""Folder of a run's cached Prefect task results, inside the run (the stage manifests stay the source of truth)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_api(folder: Path | None = None, imports: tuple[str, ...] = ()) -> Iterator[str]:
    """The Prefect API URL this process reports to: `PREFECT_API_URL` when set, else a temporary server on
    127.0.0.1 that ends with this process, even when it is killed. Child processes inherit the URL.

    Args:
        folder: a run's (or a comparison's) folder. The temporary server keeps its database in
            `<folder>/.prefect/`, and Prefect's cached task results go to `<folder>/.prefect-results/`, so
            that a run's records go with it and nothing outside grows run after run
            (docs/architecture.md#caching). A new folder's database starts as a copy of an empty one
            (`$PREFECT_HOME/spo-empty-prefect-<version>.db`, made by the first such server). None keeps
            Prefect's defaults under `$PREFECT_HOME`.
        imports: modules the command needs next (its flow, with torch and transformers), imported while the
            temporary server starts: the seconds of both overlap.
    """
    from prefect.settings import get_current_settings, temporary_settings

    results = {} if folder is None else {"results.local_storage_path": folder / PREFECT_RESULTS}
    if os.environ.get("PREFECT_API_URL"):
        _import(imports)
        with temporary_settings(updates=results):
            yield os.environ["PREFECT_API_URL"]
        return
    import httpx
    import prefect

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    database = template = None  # template: where to save this server's new, empty database, if anywhere
    if folder is not None:
        (folder / PREFECT_DATABASE).mkdir(parents=True, exist_ok=True)
        database = (folder / PREFECT_DATABASE).resolve() / "prefect.db"
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{database}"
        empty = get_current_settings().home / f"spo-empty-prefect-{prefect.__version__}.db"
        if not database.exists():
            if empty.is_file():
                _copy_database(empty, database)
            else:
                template = empty
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]  # as prefect's SubprocessASGIServer
    # a session of its own: a terminal's Ctrl-C reaches spo, which stops the server once the flow has reported
    # the interrupt to it (flows/interrupts.py); PR_SET_PDEATHSIG still ends it with us
    server = subprocess.Popen(command, env=env, preexec_fn=die_with_parent,  # noqa: PLW1509 (no threads yet)
                              start_new_session=True)
    try:
        _import(imports)
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:  # one client: each new one loads the CA bundle (~50 ms)
            while not _healthy(httpx, client, url):
                if server.poll() is not None:
                    raise RuntimeError(f"the temporary Prefect server exited with {server.returncode} while "
                                       f"starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the temporary Prefect server at {url} was not healthy after "
                                       f"{timeout:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
                time.sleep(0.1)
        if template is not None and not template.is_file():
            _copy_database(database, template)  # the schema just built, before any run is recorded in it
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={"api.url": url, **results}):
            yield url
    finally:
        _drain_prefect_workers()  # send the last logs and events while the server still listens
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _import(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its backup API: safe while a server uses `source`), written to a
    temporary name and renamed. A new run's database starts as a copy of an empty one made by this Prefect
    version: building the schema takes a fresh temporary server seconds, copying it milliseconds."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    src, dst = sqlite3.connect(source), sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    tmp.replace(target)


def _drain_prefect_workers() -> None:
    """Flush Prefect's background log and event senders (as prefect's own test harness does before it stops
    its server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _healthy(httpx, client, url: str) -> bool:
    try:
        return client.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False
