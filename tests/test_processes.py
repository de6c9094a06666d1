"""Nothing left running: a killed `spo run` or `spo compare` takes its Prefect server and child runs with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import SMALL, comparison_file

pytestmark = pytest.mark.slow  # child processes and servers

REPO = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of `pid` (from /proc): pid -> command line."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_and_check(process: subprocess.Popen, wait_for, what: str, timeout: float = 300) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while not wait_for():
        assert process.poll() is None, f"{what} ended early with {process.returncode}"
        assert time.monotonic() < deadline, f"{what}: timed out waiting to kill it mid-run"
        time.sleep(0.5)
    children = descendants(process.pid)
    assert any("prefect.server.api.server:create_app" in c for c in children.values()), children
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {p: c for p, c in children.items() if alive(p)}
    assert not left, f"left running after {what} was killed: {left}"
    return children


@pytest.fixture
def env(tmp_path):
    environment = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect_home"), "OMP_NUM_THREADS": "1"}
    environment.pop("PREFECT_API_URL", None)
    return environment


def test_a_killed_run_leaves_no_server_behind(tmp_path, env):
    run = tmp_path / "run"
    sets = [a for s in SMALL for a in ("--set", s)]
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--preset", "tiny", "--run", str(run),
                                *sets, "--set", "iterations=50"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_and_check(process, lambda: (run / "iterations" / "0001").is_dir(), "spo run")


def test_a_killed_comparison_leaves_no_server_or_run_behind(tmp_path, env):
    root = tmp_path / "runs"
    smoke = comparison_file(tmp_path, "smoke", [1, 2], [("chain", "tiny", []), ("grpo", "tiny-grpo", [])])
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "compare", str(smoke),
                                "--root", str(root), "--parallel", "2", "--threads", "1"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def runs_started() -> bool:
        return sum("flows.cli run" in c for c in descendants(process.pid).values()) >= 2

    children = kill_and_check(process, runs_started, "spo compare")
    assert sum("flows.cli run" in c for c in children.values()) >= 2


TEMPLATE_CHECK = """
import sqlite3, sys
from pathlib import Path
from prefect import flow
from flows.processes import prefect_api

home, first, second, third = map(Path, sys.argv[1:])
with prefect_api(first):
    flow(lambda: 1, name="recorded")()
(template,) = home.glob("spo-empty-prefect-*.db")
template.unlink()
with prefect_api(first):  # a database with a flow run in it: never the template
    pass
print(len(list(home.glob("spo-empty-prefect-*.db"))))
with prefect_api(second):  # a new one is
    pass
(template,) = home.glob("spo-empty-prefect-*.db")
with sqlite3.connect(template) as db:
    print(db.execute("select count(*) from flow_run").fetchone()[0])
    db.execute("create table spo_marker (x)")  # a mark only a copy of the template can carry
with prefect_api(third):
    print(flow(lambda: 42, name="template-check")())
with sqlite3.connect(third / ".prefect" / "prefect.db") as db:
    print(db.execute("select count(*) from sqlite_master where name = 'spo_marker'").fetchone()[0])
    print(db.execute("select count(*) from flow_run").fetchone()[0])
"""


def test_a_new_runs_database_is_a_copy_of_the_empty_one_the_first_server_made(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    folders = [str(tmp_path / name) for name in ("home", "first", "second", "third")]
    done = subprocess.run([sys.executable, "-c", TEMPLATE_CHECK, *folders], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # no template from a used database; the template holds no run; the flow ran on a copy that carries its mark
    assert done.stdout.split() == ["0", "0", "42", "1", "1"]
    assert not list((tmp_path / "home").glob(".*.tmp"))
