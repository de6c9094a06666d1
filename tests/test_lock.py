"""The run-directory lock: holder record, re-entrancy, a second writer's error, stale and racing takeovers.

Other writers are real processes (`python -c`), since the lock is re-entrant within one process.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from stages.runtime.lock import LockHolder, RunLockedError, lock_path, process_alive, read_holder, run_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code: str, *args: str, wait: bool = True, timeout: float = 60):
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def write_lock(root, host: str, pid: int, purpose: str = "test") -> LockHolder:
    holder = LockHolder(host, pid, "2026-01-01T00:00:00+00:00", purpose)
    lock_path(root).write_text(json.dumps(holder.__dict__))
    return holder


TRY_LOCK = """
    import sys, time
    from stages.runtime.lock import RunLockedError, run_lock
    try:
        with run_lock(sys.argv[1], "other process"):
            print("acquired", flush=True)
            time.sleep(float(sys.argv[2]))
    except RunLockedError as error:
        print("locked:", error)
"""


def test_lock_records_the_holder_and_is_released(tmp_path):
    with run_lock(tmp_path, "flow spo-run") as holder:
        stored = read_holder(tmp_path)
        assert stored == holder
        assert (stored.host, stored.pid, stored.purpose) == (socket.gethostname(), os.getpid(), "flow spo-run")
    assert read_holder(tmp_path) is None and not lock_path(tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left either


def test_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path, "flow spo-run") as outer:
        with run_lock(tmp_path, "stage train 0000") as inner:
            assert inner == outer  # the stage runs under the flow's lock
        assert read_holder(tmp_path) == outer, "the inner block released the flow's lock"
    assert read_holder(tmp_path) is None


def test_a_second_writer_gets_an_error_naming_the_holder(tmp_path):
    with run_lock(tmp_path, "flow spo-run") as holder:
        out = python(TRY_LOCK, str(tmp_path), "0").stdout
    assert out.startswith("locked:"), out
    for part in (f"pid {holder.pid}", f"host {holder.host}", f"since {holder.since}", "(flow spo-run)"):
        assert part in out, f"{part!r} missing from {out!r}"
    assert python(TRY_LOCK, str(tmp_path), "0").stdout == "acquired\n"  # free again after release


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path, caplog):
    stale = write_lock(tmp_path, socket.gethostname(), dead_pid())
    with run_lock(tmp_path, "flow spo-run") as holder:
        assert read_holder(tmp_path) == holder and holder.pid == os.getpid()
    assert "took over the stale lock" in caplog.text and f"pid {stale.pid}" in caplog.text
    assert read_holder(tmp_path) is None


def test_a_zombie_holder_counts_as_dead(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_alive(zombie.pid) and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.05)
    assert not process_alive(zombie.pid)
    write_lock(tmp_path, socket.gethostname(), zombie.pid)
    with run_lock(tmp_path, "gc"):
        pass
    zombie.wait(timeout=5)
    assert process_alive(os.getpid())


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    held = write_lock(tmp_path, "other-host", 1, "stage generate 0004")
    with pytest.raises(RunLockedError, match="other-host.*cannot be checked.*remove") as raised, \
            run_lock(tmp_path, "gc"):
        pass
    assert raised.value.holder == held and read_holder(tmp_path) == held


def test_a_malformed_lock_file_is_an_error_naming_the_fields(tmp_path):
    lock_path(tmp_path).write_text(json.dumps({"pid": 3}))
    with pytest.raises(ValueError, match=r"lacks fields \['host', 'purpose', 'since'\]"):
        read_holder(tmp_path)
    lock_path(tmp_path).write_text("{\"pid\": 3")
    with pytest.raises(ValueError, match=r"\.lock: lock file is not JSON"):
        read_holder(tmp_path)


def test_racing_takeovers_of_a_stale_lock_let_exactly_one_process_in(tmp_path):
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    racers = [python(TRY_LOCK, str(tmp_path), "3", wait=False) for _ in range(4)]
    outputs = [racer.communicate(timeout=60)[0] for racer in racers]
    winners = [out for out in outputs if out.startswith("acquired")]
    assert len(winners) == 1, outputs
    winner_pid = racers[outputs.index(winners[0])].pid
    assert all(f"pid {winner_pid} " in out for out in outputs if out.startswith("locked:")), outputs


HOLD_AND_LOG = """
    import sys, time
    from stages.runtime.lock import RunLockedError, run_lock
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            with run_lock(sys.argv[1], "racer"):
                start = time.time()
                time.sleep(0.02)
                print(start, time.time(), flush=True)
            time.sleep(0.005)  # let the others in
        except RunLockedError:
            time.sleep(0.001)
"""


def test_concurrent_lockers_never_overlap(tmp_path):
    racers = [python(HOLD_AND_LOG, str(tmp_path), wait=False) for _ in range(3)]
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in outputs]
    spans = sorted(tuple(map(float, line.split())) for out, _ in outputs for line in out.splitlines())
    assert len(spans) >= 10 and all(out for out, _ in outputs), outputs  # every racer got in, repeatedly
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlaps, overlaps[:3]
