"""Checkpoints written behind the flow (stages/runtime/write_behind.py): the next stages run before the train
stage's folders land, with the same keys and bytes as a run that writes them in the foreground, and a
failed background write stops the run at the next stage that needs the folder."""

import errno
import json
import threading
from pathlib import Path

import pytest

import stages.runtime.write_behind
from stages.runtime import registry
from stages.runtime.artifacts import manifest_path
from stages.runtime.checksums import combined_hash
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir, create_run, load_preset
from stages.runtime.write_behind import write_behind
from stages.sampling.engines import engine_pool
from tests.helpers import TINY_OVERRIDES


def plan(run: RunDir) -> list[tuple[str, int]]:
    cfg = run.config()
    return [pair for step in registry.flow_plan(cfg, range(cfg.iterations)) for pair in step]


def manifests(root: Path) -> dict[str, tuple[str, str, str]]:
    """Artifact -> (identity, content hash, stage key) of every manifest."""
    found = {}
    for m in root.rglob("*.manifest.json"):
        data = json.loads(m.read_text())
        found[str(m.relative_to(root))] = (data["sha256"], combined_hash(data["files"]), data["key"])
    return found


@pytest.fixture
def config():
    return load_preset("tiny").with_overrides([*TINY_OVERRIDES, "iterations=2"])


def test_the_next_stages_run_before_the_checkpoint_lands_with_the_same_keys_and_bytes(tmp_path, config,
                                                                                          monkeypatch):
    foreground = create_run(tmp_path / "foreground", config)
    for name, i in plan(foreground):  # no write_behind() block: folders are written by the stage itself
        find_stage(name, config)[0](foreground.root, i)

    run = create_run(tmp_path / "behind", config)
    release, real = threading.Event(), stages.runtime.write_behind.write_folder_atomic

    def held_until_released(path, write, **options):
        if path == run.checkpoint(1):
            assert release.wait(120), "never released"
        real(path, write, **options)

    monkeypatch.setattr(stages.runtime.write_behind, "write_folder_atomic", held_until_released)
    ran_before_landing = []
    with engine_pool(), write_behind():
        for name, i in plan(run):
            if (name, i) == ("train", 1):
                release.set()  # train 1 changes the tensors being written: it waits for them to land
            find_stage(name, config)[0](run.root, i)
            if i == 1 and name != "train" and not manifest_path(run.checkpoint(1)).exists():
                ran_before_landing.append(name)
    assert {"generate", "resample"} <= set(ran_before_landing), ran_before_landing
    assert manifests(run.root) == manifests(foreground.root)  # the same identities, bytes and keys
    assert not list(run.root.rglob(".*.tmp*"))


def test_a_failed_background_write_stops_the_run_at_the_next_stage_that_needs_it(tmp_path, config, monkeypatch):
    run = create_run(tmp_path / "run", config)
    real = stages.runtime.write_behind.write_folder_atomic

    def full_disk(path, write, **options):
        if path == run.checkpoint(1):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, write, **options)

    monkeypatch.setattr(stages.runtime.write_behind, "write_folder_atomic", full_disk)
    done = []
    with pytest.raises(OSError, match="No space left"), engine_pool(), write_behind():
        for name, i in plan(run):
            find_stage(name, config)[0](run.root, i)
            done.append(f"{name}-{i}")
    assert done[-1] != "train-1" and "train-0" in done  # raised before train 1 changed anything
    assert not manifest_path(run.checkpoint(1)).exists()


def content(path: Path) -> str:
    return combined_hash(json.loads(manifest_path(path).read_text())["files"])


def test_unwritten_optimizer_states_are_replayed_to_the_same_bytes(tmp_path, caplog):
    cfg = load_preset("tiny").with_overrides([*TINY_OVERRIDES, "iterations=3"])
    every = create_run(tmp_path / "every", cfg)
    for name, i in plan(every):
        find_stage(name, cfg)[0](every.root, i)
    run = create_run(tmp_path / "sparse", cfg.with_overrides(["retention.optimizer_every=2"]))
    with engine_pool(), write_behind():  # as in a flow: train 1 continues from the optimizer in memory
        for name, i in plan(run):
            find_stage(name, cfg)[0](run.root, i)
    assert "removed" in json.loads(manifest_path(run.optimizer_state(1)).read_text())
    assert not run.optimizer_state(1).exists()  # written: 2 (every 2nd) and 3 (the last)
    assert [content(run.checkpoint(c)) for c in (1, 2, 3)] == [content(every.checkpoint(c)) for c in (1, 2, 3)]
    assert [content(run.optimizer_state(c)) for c in (2, 3)] == [content(every.optimizer_state(c)) for c in (2, 3)]

    caplog.set_level("INFO")
    find_stage("train", cfg)[0](run.root, 1, force=True)  # alone, as after a crash: state 1 is not on disk
    assert "replaying train 0000-0000" in caplog.text
    assert content(run.checkpoint(2)) == content(every.checkpoint(2))
    assert content(run.optimizer_state(2)) == content(every.optimizer_state(2))
