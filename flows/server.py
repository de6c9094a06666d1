"""`spo server`: the local Prefect server (API, scheduler, UI) that schedules need, and who may reach it.

    spo server --port 4200                             # SQLite database and UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api   # in the shell that serves

The server has no users: whoever reaches its port can read every run and start, cancel or delete flow runs.
So it listens on loopback unless Prefect's basic auth is on: `PREFECT_SERVER_API_AUTH_STRING` ("user:password")
for the server, and the same string as `PREFECT_API_AUTH_STRING` in every client shell. The check is
Prefect's own (prefect/server/api/server.py compares the decoded `Authorization: Basic` header with the
server's string, on every API path but the health checks); it sends the password in the clear, so put TLS in
front (docs/architecture.md#server). Imports here are light: a refusal takes a second, not a torch import.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import NoReturn

LOCAL_HOSTS = ("localhost",)
"""Host names that mean loopback besides the loopback addresses (127.0.0.0/8, ::1)."""


def is_loopback(host: str) -> bool:
    """Whether `host` only listens to this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves to whatever the network says
        return False


def server_auth_configured() -> bool:
    """Whether the server would ask every API request for credentials: the settings a process started now
    reads (environment, .env, prefect.toml, profile) hold a non-empty `server.api.auth_string`."""
    from prefect.settings import Settings

    secret = Settings().server.api.auth_string
    return secret is not None and bool(secret.get_secret_value())


def check_host(host: str) -> None:
    """Refuse in one line to serve the unauthenticated API and UI to the network: a host other than loopback
    needs Prefect's basic auth."""
    if is_loopback(host) or server_auth_configured():
        return
    raise ValueError(f"--host {host}: serves the Prefect API and UI to the network without a password (anyone "
                     f"who reaches the port can start, cancel and delete flow runs); set "
                     f"PREFECT_SERVER_API_AUTH_STRING='user:password' for the server and PREFECT_API_AUTH_STRING "
                     f"to the same value in every shell that runs or serves flows (the UI asks for it), and put TLS in "
                     f"front, or keep --host 127.0.0.1 (docs/architecture.md#server)")


def server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that starts the local Prefect server (API, scheduler, UI; SQLite under PREFECT_HOME)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def start_server(port: int, host: str = "127.0.0.1") -> NoReturn:
    """Become the Prefect server process (exec), so that SIGTERM and Ctrl-C reach it directly; a host other than
    loopback only with Prefect's basic auth (`check_host`)."""
    check_host(host)
    auth = " and PREFECT_API_AUTH_STRING (the server's auth string)" if server_auth_configured() else ""
    print(f"Prefect server on http://{host}:{port}; in the shell that serves flows: "
          f"export PREFECT_API_URL=http://{host}:{port}/api{auth}", flush=True)
    command = server_command(port, host)
    os.execv(command[0], command)
