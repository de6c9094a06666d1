"""Ctrl-C and SIGTERM (flows/interrupts.py): `spo run` stops within 10 s in one line, leaves no process and
no lock, and the resumed run ends with the bytes of an uninterrupted one.

Real parts: `spo run` child processes with their own temporary Prefect servers, a real tiny model. The
signal lands when the child's progress bar shows the stage (its stderr), as a person would press Ctrl-C.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stages.runtime.lock import lock_path
from tests.helpers import SPO_CHILD, TINY_OVERRIDES, fingerprints

pytestmark = pytest.mark.slow  # `spo run` child processes

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [*TINY_OVERRIDES, "iterations=2", "warmstart.max_steps=60", "warmstart.eval_every=30",
            "sample.questions_per_iteration=8"]
POINTS = ["warmstart", "generate 0000", "train 0001"]
"""Where the signals land: the warm start, a sampling stage, and a train stage while the previous
checkpoint may still be written behind."""
BAR = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")


def start(run: Path, first: bool) -> tuple[subprocess.Popen, list[bytes]]:
    args = ["run", "--preset", "tiny", *(f"--set={s}" for s in SETTINGS)] if first else ["run"]
    env = {**os.environ, "SPO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([sys.executable, "-c", SPO_CHILD, *args, "--run", str(run)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[bytes] = []
    threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read1(4096), b"")), daemon=True).start()
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, err


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def interrupt(run: Path, first: bool, point: str, signum: int) -> float:
    """Start `spo run`, signal it when `point` shows, check how it stops; returns seconds to exit."""
    process, err = start(run, first)
    deadline = time.monotonic() + 300
    while point.encode() not in b"".join(err):
        assert process.poll() is None, f"exited before {point}: {b''.join(err).decode()[-3000:]}"
        assert time.monotonic() < deadline, f"{point} never showed"
        time.sleep(0.02)
    seen = len(b"".join(err))
    family = descendants(process.pid)
    sent = time.monotonic()
    process.send_signal(signum)
    code = process.wait(timeout=30)
    seconds = time.monotonic() - sent
    time.sleep(0.5)  # the reader thread drains the pipe
    text = b"".join(err).decode(errors="replace")
    new = b"".join(err)[seen:].decode(errors="replace")  # `seen` counts bytes; a bar's blocks are 3 bytes each
    after = [part for line in new.splitlines() for part in line.split("\r")
             if part.strip() and not BAR.search(part)]
    name = signal.Signals(signum).name
    assert code == 128 + signum, f"exit {code}, expected {128 + signum}: {text[-3000:]}"
    assert seconds < 10, f"{name} at {point}: {seconds:.1f} s to exit"
    assert len(after) == 1 and after[0].startswith(f"spo: interrupted by {name}: "), after
    assert f"resume with: spo run --run {run}" in after[0], after
    assert "Traceback" not in text, text[-3000:]
    time.sleep(1)
    left = [pid for pid in family if alive(pid)]
    assert not left, f"processes left after {name} at {point}: {left}"
    assert not lock_path(run).exists()
    return seconds


@pytest.fixture(scope="module")
def uninterrupted(prefect_harness, tmp_path_factory) -> Path:
    """The same run, uninterrupted, in this process (one torch thread, as the children): the fault suite shows
    that a run in a child process and one here make the same bytes."""
    from flows.spo_run import spo_run
    from stages.runtime.run_dir import create_run, load_preset

    run = create_run(tmp_path_factory.mktemp("uninterrupted") / "run", load_preset("tiny").with_overrides(SETTINGS))
    spo_run(str(run.root))
    return run.root


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGTERM, signal.SIGINT),
                                     (signal.SIGTERM, signal.SIGINT, signal.SIGTERM)], ids=["int-term-int",
                                                                                           "term-int-term"])
def test_interrupts_stop_in_one_line_and_the_resumed_run_equals_an_uninterrupted_one(uninterrupted, tmp_path,
                                                                                       signals):
    run = tmp_path / "run"
    times = [interrupt(run, i == 0, point, signum) for i, (point, signum) in enumerate(zip(POINTS, signals))]
    print(f"\nseconds from signal to exit: {', '.join(f'{t:.1f}' for t in times)}")
    process, err = start(run, first=False)
    assert process.wait(timeout=600) == 0, b"".join(err).decode()[-3000:]
    expected, got = fingerprints(uninterrupted), fingerprints(run)
    assert got == expected, sorted(p for p in expected.keys() | got.keys() if expected.get(p) != got.get(p))
