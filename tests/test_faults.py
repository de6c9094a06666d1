"""Fault injection: after each fault a rerun completes and every artifact equals an undisturbed run's.

Faults: SIGKILL inside each stage's write (a half-written Parquet file, a half-written checkpoint, just
before a rename, between or inside manifests), a truncated and a bit-flipped finished Parquet file, a
full disk, two concurrent writers, a changed config. Kills happen in real subprocesses that patch the
writer they interrupt (`RUNNER`); nothing in the production code knows about faults. "Equal" means
the same sha256 for every finished artifact (Parquet files and checkpoint folders, weights included).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch

import stages.runtime.write_behind
from stages.runtime.artifacts import ArtifactError, is_finished, manifest_path, read_manifest, read_table
from stages.runtime.history import ConfigChangeRefused, reopen
from stages.runtime.lock import read_holder
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir, create_run, load_preset
from tests.helpers import (
    assert_equal_to,
    fingerprints,
    flow_plan,
    manifest_times,
    recomputed_stages,
    run_plan,
)

pytestmark = pytest.mark.slow  # child processes killed mid-write

TESTS = Path(__file__).resolve().parent

RUNNER = r"""
import json, os, signal, sys, time
from pathlib import Path
tests, root, plan, target, point = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
sys.path.insert(0, tests)
import conftest  # registers the `coin` test task
import torch
torch.set_num_threads(1)
import pyarrow.parquet as pq
import contextlib, threading
import stages.runtime.artifacts, stages.warmstart, stages.runtime.write_behind
from stages.sampling.engines import engine_pool
from stages.runtime.lock import RunLockedError
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir


armed, manifests, outputs = False, 0, 0

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def halve(path):  # what a write cut short leaves behind: the first half of the bytes
    os.truncate(path, os.path.getsize(path) // 2)

real_write_table = pq.write_table
def write_table(table, where, **kwargs):
    real_write_table(table, where, **kwargs)
    if armed and point == "parquet":
        halve(where)
        die()
pq.write_table = write_table

real_replace = os.replace
def replace(src, dst):
    if armed and point == "rename" and not str(dst).endswith(".json"):
        die()
    real_replace(src, dst)
os.replace = replace

real_manifest = stages.runtime.artifacts.write_json_atomic
def write_manifest(path, data):
    global manifests
    manifests += 1
    if armed and point == "manifest" and manifests == outputs:  # the last manifest, after the others
        path.with_name(f".{path.name}.tmp-{os.getpid()}").write_text(json.dumps(data)[:40])
        die()
    real_manifest(path, data)
stages.runtime.artifacts.write_json_atomic = write_manifest

def interrupting(real_folder):
    def write_folder(path, write, **options):
        def write_then_die(folder):
            write(folder)
            print("killed in thread", threading.current_thread().name, flush=True)
            halve(max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
            die()
        real_folder(path, write_then_die if armed and point in ("checkpoint", "behind") else write, **options)
    return write_folder
for module in (stages.runtime.write_behind, stages.warmstart):
    module.write_folder_atomic = interrupting(module.write_folder_atomic)

if point == "patient":  # start together with the other runner
    (root.parent / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not (root.parent / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
with contextlib.ExitStack() as flow:
    if point == "behind":  # as in a flow: checkpoints are written behind it, and the kill lands in that write
        flow.enter_context(engine_pool())
        flow.enter_context(stages.runtime.write_behind.write_behind())
    for name, i in plan:
        function, spec = find_stage(name, RunDir(root).config())
        armed = f"{name}-{i}" == target or (armed and point == "behind")  # the write comes after the stage
        manifests, outputs = 0, len(spec.writes(RunDir(root), i))
        while True:
            try:
                function(root, i)
                break
            except RunLockedError as error:
                if point != "patient":
                    raise
                print("waited:", error, flush=True)
                time.sleep(0.02)
print("done", flush=True)
"""

KILLS = [("warmstart-0", "checkpoint"), ("evaluate-0", "parquet"), ("prompts-0", "rename"),
         ("generate-0", "parquet"), ("partition-0", "manifest"), ("resample-0", "manifest"),
         ("advantages-0", "rename"), ("train-0", "checkpoint"), ("train-0", "behind"), ("train-1", "manifest"),
         ("evaluate-2", "rename")]
"""(stage-iteration, where the SIGKILL lands): every stage is killed inside its write at least once; "behind"
kills the background write of train's checkpoint (stages/runtime/write_behind.py) while the next stages run."""



def fault_config():
    from tests.helpers import TINY_OVERRIDES

    return load_preset("tiny").with_overrides([*TINY_OVERRIDES, "iterations=2"])


def runner(run: RunDir, target: str = "", point: str = "none") -> subprocess.Popen:
    plan = json.dumps(flow_plan(run))
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(TESTS), str(run.root), plan, target, point],
                            cwd=TESTS.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_nothing_partial_under_a_final_name(run: RunDir) -> None:
    """Final-named Parquet files are whole, manifests match their files, final checkpoints load."""
    for path in run.root.rglob("*.parquet"):
        if "superseded" not in path.parts and not path.name.startswith("."):
            pq.read_table(path)
            if manifest_path(path).exists():
                read_manifest(path)
    for folder in (run.root / "checkpoints").glob("[0-9][0-9][0-9][0-9]"):
        safetensors.torch.load_file(folder / "model.safetensors")
        if manifest_path(folder).exists():
            read_manifest(folder)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> RunDir:
    """The undisturbed run (two iterations, in this process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = create_run(tmp_path_factory.mktemp("reference") / "run", fault_config())
    run_plan(run)
    torch.set_num_threads(threads)
    return run


def copy_of(reference: RunDir, tmp_path: Path) -> RunDir:
    return RunDir(Path(shutil.copytree(reference.root, tmp_path / "run")))


def test_kill_inside_each_stage_write_then_rerun(tmp_path, reference):
    run = create_run(tmp_path / "run", fault_config())
    outcomes = []
    for target, point in KILLS:
        process = runner(run, target, point)
        out, err = process.communicate(timeout=240)
        assert process.returncode == -signal.SIGKILL, f"{target} {point}: not killed\n{out}\n{err[-3000:]}"
        if point == "behind":
            assert "killed in thread spo-write-behind" in out, out  # not in the stage's own thread
        name, i = target.rsplit("-", 1)
        assert not is_finished(find_stage(name, run.config())[1], run, int(i)), f"{target} counts as finished"
        assert_nothing_partial_under_a_final_name(run)
        assert read_holder(run.root).pid == process.pid  # a stale lock, taken over by the next process
        outcomes.append((target, point, sorted(p.name for p in run.root.rglob(".*.tmp*"))))
    run_plan(run)  # the rerun completes whatever the last kill interrupted
    assert_equal_to(reference, run)
    assert any(tmp for *_, tmp in outcomes), "no kill left a temporary file: the cleanup was never exercised"


def test_concurrent_writers_wait_for_each_other_and_never_redo_work(tmp_path, reference):
    run = create_run(tmp_path / "run", fault_config())
    writers = [runner(run, point="patient") for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [w.communicate(timeout=240) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [err[-3000:] for _, err in outputs]
    waits = [line for out, _ in outputs for line in out.splitlines() if line.startswith("waited:")]
    assert waits, "the writers never met: no contention was tested"
    assert any(f"pid {w.pid} " in line for w in writers for line in waits)  # the error names the holder
    assert not list(run.root.rglob("superseded")), "a writer replaced the other's finished work"
    assert_equal_to(reference, run)


def test_corrupted_parquet_is_detected_and_only_its_stage_reruns(tmp_path, reference):
    run = copy_of(reference, tmp_path)
    rollouts, values = run.artifact(0, "rollouts"), run.artifact(1, "values")
    rollouts.write_bytes(rollouts.read_bytes()[: rollouts.stat().st_size // 2])  # truncated
    flipped = bytearray(values.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # same size, one byte changed
    values.write_bytes(bytes(flipped))
    for path in (rollouts, values):
        with pytest.raises(ArtifactError, match=f"{path.name}: content hash .* differs from its manifest"):
            read_table(path)
    before = manifest_times(run.root)
    run_plan(run)
    # regenerated identically, so nothing downstream changes key: generate 0 and resample 1 only
    assert recomputed_stages(run.root, before) == {"generate-0", "resample-1"}
    kept = list((run.iteration_dir(0) / "superseded").rglob("rollouts.parquet"))
    assert len(kept) == 1 and kept[0].stat().st_size < rollouts.stat().st_size  # kept aside, never used
    assert_equal_to(reference, run)


def test_a_changed_config_reruns_exactly_the_stages_downstream(tmp_path, reference):
    run = copy_of(reference, tmp_path)
    before = manifest_times(run.root)
    with pytest.raises(ConfigChangeRefused, match="partition.interval changed.*first: partition 0000.*--from 0"):
        reopen(run.root, fault_config().with_overrides(["partition.interval=2"]))
    assert manifest_times(run.root) == before
    reopen(run.root, fault_config().with_overrides(["partition.interval=2"]), from_iteration=0)
    run_plan(run, redo_from=0)
    downstream = {"partition-0", "resample-0", "advantages-0", "train-0",  # new boundaries, values, episodes
                  "generate-1", "partition-1", "resample-1", "advantages-1", "train-1", "evaluate-2"}  # new ckpt 1
    assert recomputed_stages(run.root, before) == downstream  # warmstart, evaluate-0, prompts, generate-0 kept
    assert fingerprints(run.root) != fingerprints(reference.root)
    before = manifest_times(run.root)
    reopen(run.root, fault_config(), from_iteration=0)  # back to the reference config: the same stages again
    run_plan(run, redo_from=0)
    assert recomputed_stages(run.root, before) == downstream
    assert_equal_to(reference, run)
    assert len(list((run.root / "history").glob("run-*.json"))) == 2


def test_a_full_disk_mid_write_leaves_nothing_partial(tmp_path, reference, monkeypatch, caplog):
    run = copy_of(reference, tmp_path)

    def full_disk_parquet(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(pq, "write_table", full_disk_parquet)
    with pytest.raises(OSError, match="No space left"):
        find_stage("advantages", run.config())[0](run.root, 0, force=True)
    monkeypatch.undo()
    assert not list(run.root.rglob("*.tmp*"))
    read_table(run.artifact(0, "episodes"))  # the old one stays until a replacement has landed

    real_folder = stages.runtime.write_behind.write_folder_atomic

    def full_disk_checkpoint(path, write, **options):
        def write_then_fail(folder):
            write(folder)
            raise OSError(errno.ENOSPC, "No space left on device", str(folder))
        real_folder(path, write_then_fail, **options)

    monkeypatch.setattr(stages.runtime.write_behind, "write_folder_atomic", full_disk_checkpoint)
    with pytest.raises(OSError, match="No space left"):
        find_stage("train", run.config())[0](run.root, 1, force=True)
    monkeypatch.undo()
    assert list(run.root.glob("checkpoints/.0002.tmp*"))
    assert_nothing_partial_under_a_final_name(run)  # checkpoint 2 is still the old one, whole
    assert_equal_to(reference, run, temporaries=True)

    for name, i in (("advantages", 0), ("train", 1)):  # recomputed: the temporary is removed, the same bytes land
        find_stage(name, run.config())[0](run.root, i, force=True)
    assert "left by an interrupted writer" in caplog.text
    assert_equal_to(reference, run)


def flip_keeping_size_and_time(path: Path, at: float | None = None) -> None:
    """Change one byte in place and put the modification time back: what the cheap check cannot see. The
    byte is at fraction `at` of the file, or by default the last of a Parquet file's first column chunk
    (page data: a byte of a page header or of the footer may decode to something else that still reads)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    if at is None:
        chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        data[start + chunk.total_compressed_size - 1] ^= 0xFF
    else:
        data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_same_size_same_time_flip_is_caught_by_parquet_checksums_and_by_spo_verify(tmp_path, reference, capsys):
    from flows.cli import main as spo

    run = copy_of(reference, tmp_path)
    values, weights = run.artifact(1, "values"), run.checkpoint(1) / "model.safetensors"
    flip_keeping_size_and_time(values)
    flip_keeping_size_and_time(weights, at=0.9)  # inside the tensor data, past the safetensors header
    read_manifest(values)  # size and time still match: the cheap check passes ...
    with pytest.raises(ArtifactError, match="values.parquet: unreadable although its size and time match"):
        read_table(values)  # ... and Parquet's page checksums catch it on read
    read_manifest(run.checkpoint(1))  # a checkpoint has no checksum of its own: only a full pass sees it
    assert spo(["verify", str(run.root)]) == 1
    out = capsys.readouterr().out
    assert f"{values}: content hash" in out and f"{run.checkpoint(1)}: content hash" in out
    assert "model.safetensors differs from its manifest" in out and ": 2 differ from their manifests" in out
