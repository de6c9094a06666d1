"""Experiment trackers fed from the stored artifacts: TensorBoard event files whose scalars are what
`spo inspect` prints, and an offline Weights & Biases run; a resumed run logs nothing twice.

Real parts: a real Prefect flow run of a tiny model, real TensorBoard event files read back with
TensorBoard's own reader, and real wandb in offline mode (nothing leaves the machine).
"""

import json
import os
import struct

import pytest

os.environ["WANDB_MODE"] = "offline"  # tests never reach a W&B server
os.environ.setdefault("WANDB_SILENT", "true")

from flows.spo_run import spo_run
from stages.reports.summary import iteration_summary
from stages.reports.trackers import iteration_scalars
from stages.runtime.run_dir import create_run, load_preset
from tests.helpers import TINY_OVERRIDES


@pytest.fixture(scope="module")
def tracked_run(prefect_harness, tmp_path_factory):
    """A 2-iteration tiny run with both trackers on: a flow run up to iteration 1, then a resumed one."""
    cfg = load_preset("tiny").with_overrides(
        [*TINY_OVERRIDES, "iterations=2", "log.tensorboard=true", "log.wandb=true", "log.samples_every=1"])
    run = create_run(tmp_path_factory.mktemp("trackers") / "run", cfg)
    spo_run(str(run.root), until=1)
    spo_run(str(run.root))  # resumes: iteration 0 is cached and logged again, never twice
    return run


def events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run.root / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_scalars_are_what_inspect_prints_once_per_step(tracked_run):
    accumulator = events(tracked_run)
    rows = iteration_summary(tracked_run)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    checked = 0
    for row in rows:
        for column, value in row.items():
            if column == "iteration" or value is None:
                continue
            logged = [e for e in accumulator.Scalars(f"summary/{column}") if e.step == row["iteration"]]
            assert len(logged) == 1, (column, row["iteration"], logged)
            assert logged[0].value == pytest.approx(value, rel=1e-6, abs=1e-7), (column, row["iteration"])
            checked += 1
    assert checked >= 20
    tags = accumulator.Tags()["scalars"]
    for tag in ("update/loss_policy", "update/loss_kl", "update/clipfrac", "stats/approx_kl", "seconds/train",
                "summary/eval_greedy", "rollouts/reward_mean"):
        assert tag in tags, tag
    for tag in tags:
        steps = [e.step for e in accumulator.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag} logged twice at a step: {steps}"
    assert sorted(p.name for p in (tracked_run.root / "tensorboard").iterdir()) == [
        f"events.out.tfevents.{i:08d}.spo" for i in (0, 1, 2)]


def test_tensorboard_shows_decoded_completions_with_their_advantages(tracked_run):
    accumulator = events(tracked_run)
    texts = accumulator.Tensors("completions/text_summary")
    assert [t.step for t in texts] == [0, 1]
    table = texts[0].tensor_proto.string_val[0].decode()
    assert table.startswith("| iteration | question_id | kind | reward | prompt | completion |")
    assert "⟦" in table and "}" in table


def wandb_history(run_folder) -> list[dict]:
    """The history rows of an offline W&B run, read from its `.wandb` file: a LevelDB-style log (a 7-byte
    header, 32 KiB blocks of records with a 7-byte header each: checksum, length, type; FULL = 1, FIRST = 2,
    MIDDLE = 3, LAST = 4) of `Record` protobufs. wandb 0.31 has no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_folder.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    rows, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending = data[pos + 7:pos + 7 + length] if kind in (1, 2) else pending + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_logs_every_step_once(tracked_run):
    assert json.loads((tracked_run.root / "wandb" / "logged.json").read_text()) == [0, 1, 2]
    runs = sorted((tracked_run.root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs  # one per flow run, both with the run folder's id
    assert len({r.name.rsplit("-", 1)[1] for r in runs}) == 1
    history = [row for r in runs for row in wandb_history(r)]
    assert [row["_step"] for row in history] == [0, 1, 2]  # the resumed flow run skipped step 0
    scalars = {row["iteration"]: iteration_scalars(tracked_run, row["iteration"]) for row in iteration_summary(tracked_run)}
    for row in history:
        expected = scalars[row["_step"]]
        assert set(expected) <= set(row)
        assert all(row[k] == pytest.approx(v) for k, v in expected.items()), row["_step"]
