"""Retention (`stages/runtime/gc.py`): which checkpoints go, which stay and why, tombstones, optimizer states.

gc only reads the layout (checkpoint folders, manifests, eval files), so runs here are made of small
checkpoint folders with real manifests (`stages.runtime.checksums.file_records`) instead of trained models.
"""

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.cli import main as spo
from spo.config import RetentionConfig
from stages.runtime.artifacts import ArtifactError, manifest_path, read_manifest
from stages.runtime.checksums import combined_hash, file_records
from stages.runtime.gc import gc, retain
from stages.runtime.lock import RunLockedError, lock_path
from stages.runtime.run_dir import RunDir, write_json_atomic


def finish(folder: Path) -> None:
    records = file_records(folder)
    write_json_atomic(manifest_path(folder), {"sha256": combined_hash(records), "files": records, "key": "k",
                                              "report": {}})


def make_run(root: Path, checkpoints: list[int], evaluated: list[int], critic: bool = False) -> RunDir:
    run = RunDir(root)
    for index in checkpoints:
        folder = run.checkpoint(index)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes(1000 + index))
        finish(folder)
        states = [(run.optimizer_state(index), 2000)] if index else []
        if critic:  # PPO: a critic per checkpoint and its optimizer state
            states += [(run.critic(index), 3000)] + ([(run.critic_optimizer_state(index), 4000)] if index else [])
        for state, size in states:
            state.mkdir()
            (state / "optimizer.pt").write_bytes(bytes(size + index))
            finish(state)
    for index in evaluated:
        run.iteration_dir(index).mkdir(parents=True, exist_ok=True)
        run.artifact(index, "eval").write_bytes(b"eval table")
    return run


def test_gc_keeps_reference_newest_evaluated_and_last_n(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=list(range(8)), evaluated=[2, 4])
    report = gc(run.root, keep_last=2)
    # 0: KL reference; 2, 4: evaluated; 6: last 2; 7: newest (also last 2) -> 1, 3, 5 go
    assert report.removed == [1, 3, 5]
    assert report.kept == {0: "KL reference", 2: "evaluated", 4: "evaluated",
                           6: "one of the last 2", 7: "newest"}
    assert report.freed_bytes == 1001 + 1003 + 1005 + 2001 + 2003 + 2005  # and their optimizer states
    assert run.checkpoints() == [0, 2, 4, 6, 7]
    assert sorted(p.name for p in (run.root / "checkpoints").iterdir() if p.is_dir()) == [
        "0000", "0002", "0002-optimizer", "0004", "0004-optimizer", "0006", "0006-optimizer", "0007",
        "0007-optimizer"]
    for index in run.checkpoints():
        read_manifest(run.checkpoint(index))  # still intact
    for index in (1, 3, 5):  # a tombstone keeps the hash, so keys that read it stay computable
        with pytest.raises(ArtifactError, match="removed by retention"):
            read_manifest(run.checkpoint(index))
        assert read_manifest(run.checkpoint(index), removed_ok=True)["sha256"]
    assert not lock_path(run.root).exists()


def test_keep_last_zero_and_dry_run(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2, 3], evaluated=[])
    planned = gc(run.root, keep_last=0, dry_run=True)
    assert planned.removed == [1, 2] and run.checkpoints() == [0, 1, 2, 3]
    assert gc(run.root, keep_last=0).removed == [1, 2] and run.checkpoints() == [0, 3]
    assert gc(run.root, keep_last=0).removed == []  # nothing left to remove
    with pytest.raises(ValueError, match="--keep-last must be >= 0, got -1"):
        gc(run.root, keep_last=-1)


def test_an_interrupted_gc_leaves_an_unfinished_folder_that_the_next_gc_removes(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2, 3], evaluated=[])
    manifest_path(run.checkpoint(1)).unlink()  # a write killed before its manifest
    with pytest.raises(ArtifactError, match="unfinished or missing"):
        read_manifest(run.checkpoint(1))  # never read as a checkpoint
    tombstoned = json.loads(manifest_path(run.checkpoint(2)).read_text())  # a gc killed after the tombstone
    write_json_atomic(manifest_path(run.checkpoint(2)), {**tombstoned, "removed": "test"})
    report = gc(run.root, keep_last=1)
    assert report.unfinished == ["0001", "0002"] and report.removed == []
    assert not run.checkpoint(1).exists() and not run.checkpoint(2).exists() and run.checkpoints() == [0, 3]


def test_gc_refuses_while_another_process_writes(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2], evaluated=[])
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "since": "2026-01-01T00:00:00+00:00",
              "purpose": "flow spo-run"}
    lock_path(run.root).write_text(json.dumps(holder))
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()} .*flow spo-run"):
        gc(run.root, keep_last=0)
    assert run.checkpoints() == [0, 1, 2]


def test_spo_gc_command(tmp_path, capsys):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2, 3], evaluated=[1])
    assert spo(["gc", str(run.root), "--keep-last", "1"]) == 0
    out = capsys.readouterr().out
    assert "removed checkpoints [2]" in out and "1: evaluated" in out
    assert run.checkpoints() == [0, 1, 3]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_gc_properties(data):
    n = data.draw(st.integers(1, 9), label="checkpoints")
    evaluated = data.draw(st.lists(st.integers(0, n - 1), unique=True), label="evaluated")
    keep_last = data.draw(st.integers(0, n + 1), label="keep_last")
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "run", list(range(n)), evaluated)
        report = gc(run.root, keep_last)
        left = run.checkpoints()
        protected = {0, n - 1, *evaluated, *range(max(n - keep_last, 0), n)}
        assert set(left) == protected and sorted(report.removed) == sorted(set(range(n)) - protected)
        assert set(report.kept) == protected
        for index in range(n):  # a folder exactly where a live manifest is; a tombstone where it went
            assert run.checkpoint(index).exists() == (index in left)
            assert manifest_path(run.checkpoint(index)).exists()


def test_a_run_keeps_the_newest_optimizer_states(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2, 3, 4], evaluated=[])
    report = retain(run, RetentionConfig(optimizer_states=2, checkpoints=0))
    assert report.optimizer_states == [1, 2] and report.removed == []
    assert [i for i in range(1, 5) if run.optimizer_state(i).exists()] == [3, 4]
    assert run.checkpoints() == [0, 1, 2, 3, 4]
    assert retain(run, RetentionConfig(optimizer_states=0, checkpoints=0)).optimizer_states == []  # 0 keeps all


def test_the_critic_and_its_optimizer_states_go_with_the_policy_s(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=[0, 1, 2, 3], evaluated=[], critic=True)
    report = retain(run, RetentionConfig(optimizer_states=1, checkpoints=1))
    assert report.removed == [1, 2] and report.optimizer_states == []  # 1, 2 went with their checkpoints
    assert report.freed_bytes == sum(size + i for i in (1, 2) for size in (1000, 2000, 3000, 4000))
    left = sorted(p.name for p in (run.root / "checkpoints").iterdir() if p.is_dir())
    assert left == ["0000", "0000-critic", "0003", "0003-critic", "0003-critic-optimizer", "0003-optimizer"]
    run = make_run(tmp_path / "states", checkpoints=[0, 1, 2, 3], evaluated=[], critic=True)
    report = retain(run, RetentionConfig(optimizer_states=1, checkpoints=0))
    assert report.optimizer_states == [1, 2] and report.removed == []
    assert [i for i in range(1, 4) if run.critic_optimizer_state(i).exists()] == [3]
    assert all(run.critic(i).exists() for i in range(4))
