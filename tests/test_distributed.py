"""Beyond one process, on loopback: a 2-rank train stage (torch.distributed.run, gloo) equals the
single-process one (DDP and FSDP2), a killed rank fails the stage cleanly and the rerun succeeds, and a
2-worker Dask cluster samples the artifact a single process samples.

The run is the arith task (ranks and workers are new processes: they see only built-in tasks) with
GRPO-style episodes whose advantages are drawn here (a barely trained tiny model answers nothing right,
so real advantages would all be 0 and every step would be the same no-op).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from schemas.episodes import EPISODES
from stages import advantages
from stages.runtime.artifacts import execute, manifest_path, read_manifest, read_table
from stages.runtime.lock import lock_path
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir, create_run, load_preset
from stages.train import launcher_failure
from tests.helpers import SMALL

pytestmark = pytest.mark.slow  # torchrun ranks and Dask workers


def drawn_advantages(ctx):
    """Episodes of the iteration's rollouts with seeded random advantages on every token (test data)."""
    rng = np.random.default_rng(0)
    rows = []
    for r in ctx.read("rollouts").to_pylist():
        n = len(r["response_ids"])
        rows.append({"episode_id": len(rows), "source_id": str(r["rollout_id"]), "question_id": r["question_id"],
                     "iteration": ctx.iteration, "kind": "rollout", "prompt_ids": r["prompt_ids"],
                     "response_ids": r["response_ids"], "advantages": rng.normal(size=n).tolist(),
                     "mask": [True] * n, "old_logp": r["logp"], "reward": r["reward"]})
    return {"episodes": pa.Table.from_pylist(rows, schema=EPISODES)}, {}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A run up to iteration 0's episodes, and its single-process train stage's output."""
    cfg = load_preset("tiny-grpo").with_overrides([*SMALL, "iterations=1", "train.kl_coef=0.01"])
    run = create_run(tmp_path_factory.mktemp("dist") / "single", cfg)
    for name in ("warmstart", "prompts", "generate"):
        find_stage(name, cfg)[0](run.root, 0)
    execute(advantages.SPEC, run, 0, drawn_advantages)
    before = RunDir(Path(shutil.copytree(run.root, run.root.parent / "before")))
    find_stage("train", cfg)[0](run.root, 0)
    return run, before


def copy_with(before: RunDir, folder: Path, overrides: list[str]) -> RunDir:
    """A copy of a prepared run with its config changed."""
    run = RunDir(Path(shutil.copytree(before.root, folder)))
    create_run(run.root, run.config().with_overrides(overrides))
    return run


@pytest.mark.parametrize("sharding, extra", [("ddp", []), ("fsdp", []),
                                             ("fsdp", ["train.activation_checkpointing=true"])],
                         ids=["ddp", "fsdp", "fsdp-checkpointed"])  # FSDP2's hooks run inside each layer's rerun
def test_two_ranks_train_as_one_process(prepared, tmp_path, sharding, extra):
    single, before = prepared
    run = copy_with(before, tmp_path / "run", ["train.world_size=2", f"train.sharding={sharding}", *extra])
    report = find_stage("train", run.config())[0](run.root, 0)
    assert report.counters["train/steps"] == 2
    ours, theirs = load_file(run.checkpoint(1) / "model.safetensors"), load_file(single.checkpoint(1) / "model.safetensors")
    start = load_file(before.checkpoint(0) / "model.safetensors")
    moved = max(float((theirs[k] - start[k]).abs().max()) for k in theirs)
    gap = max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)
    print(f"\n{sharding}: weights moved up to {moved:.2e} in the step; 2 ranks vs 1 process differ by {gap:.2e}")
    assert moved > 1e-4 and gap < 1e-5 * max(1.0, moved / 1e-3)  # float32: only the order of additions differs
    mine = read_table(run.artifact(0, "train_metrics")).to_pylist()
    reference = read_table(single.artifact(0, "train_metrics")).to_pylist()
    for a, b in zip(mine, reference):
        assert a["tokens"] == b["tokens"] and a["sequences"] == b["sequences"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    state = torch.load(run.optimizer_state(1) / "optimizer.pt", weights_only=True)
    single_state = torch.load(single.optimizer_state(1) / "optimizer.pt", weights_only=True)
    assert state["state"].keys() == single_state["state"].keys(), "the optimizer state is saved whole, by index"


def rank_processes() -> dict[int, int]:
    """pid -> RANK of the running train ranks (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"stages.training.ranks" in (entry / "cmdline").read_bytes():
                env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
                found[int(entry.name)] = int(env.get(b"RANK", b"-1"))
        except OSError:
            continue
    return found


def test_a_killed_rank_fails_the_stage_cleanly_and_the_rerun_succeeds(prepared, tmp_path):
    _, before = prepared
    run = copy_with(before, tmp_path / "run", ["train.world_size=2", "train.sharding=ddp"])
    train = find_stage("train", run.config())[0]
    errors = []
    worker = threading.Thread(target=lambda: _capture(errors, train, run.root))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(rank == 1 for rank in rank_processes().values()):
        time.sleep(0.2)
    time.sleep(2)  # let it get going
    victims = [pid for pid, rank in rank_processes().items() if rank == 1]
    assert victims, "rank 1 never started"
    os.kill(victims[0], signal.SIGKILL)
    worker.join(timeout=240)
    assert errors and "rank 1 failed first" in str(errors[0]), errors
    assert not run.checkpoint(1).exists() and not manifest_path(run.checkpoint(1)).exists()
    assert not lock_path(run.root).exists() and not list(run.iteration_dir(0).glob(".train-ranks-*"))
    train(run.root, 0)
    assert json.loads(manifest_path(run.checkpoint(1)).read_text())["artifact"] == "0001"


def test_a_rank_that_aborts_is_named_with_its_own_last_words(tmp_path):
    """A rank's own error (printed before it dies) is in the stage's error, not only the launcher's 'Signal 6'."""
    script = tmp_path / "abort.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    print('rank 1: the reason it stopped', file=sys.stderr, flush=True)\n"
                      "    os.abort()\n"
                      "time.sleep(30)\n")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             str(script)], capture_output=True, text=True, timeout=120, check=False)
    message = launcher_failure(result.returncode, result.stderr)
    assert message.startswith(f"torch.distributed.run exited with {result.returncode}; rank 1 failed first;"), message
    own, summary = message.split("The launcher's summary ends:")
    assert "rank 1: the reason it stopped" in own and "SIGABRT" not in own, message
    assert "(SIGABRT)" in summary and "the reason it stopped" not in summary, message


def _capture(errors: list, train, root: Path) -> None:
    try:
        train(root, 0)
    except RuntimeError as error:
        errors.append(error)


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    """A run up to iteration 0's boundaries, and its single-process resample stage's output."""
    cfg = load_preset("tiny").with_overrides([*SMALL, "iterations=1", "partition.interval=1",
                                              "sample.questions_per_iteration=6"])
    run = create_run(tmp_path_factory.mktemp("dask") / "single", cfg)
    for name in ("warmstart", "prompts", "generate", "partition"):
        find_stage(name, cfg)[0](run.root, 0)
    before = RunDir(Path(shutil.copytree(run.root, run.root.parent / "before")))
    find_stage("resample", cfg)[0](run.root, 0)
    return run, before


def sha(path: Path) -> str:
    return read_manifest(path)["sha256"]


def test_two_dask_workers_sample_the_single_process_artifact(partitioned, tmp_path):
    single, before = partitioned
    run = copy_with(before, tmp_path / "run", ["launch.dask_workers=2"])  # no stage key reads launch
    report = find_stage("resample", run.config())[0](run.root, 0)
    assert report.counters["shards/workers"] == 2, report.counters  # both workers sampled
    for name in ("mc_samples", "values"):
        assert sha(run.artifact(0, name)) == sha(single.artifact(0, name)), f"{name} differs byte for byte"
    assert report.key == json.loads(manifest_path(single.artifact(0, "values")).read_text())["key"]


RESAMPLE = """
from pathlib import Path

from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir

if __name__ == "__main__":  # the local cluster's workers are spawned: they re-import this file
    run = RunDir(Path({root!r}))
    find_stage("resample", run.config())[0](run.root, 0)
"""


def test_a_stage_killed_mid_shards_reuses_the_finished_ones_when_rerun(partitioned, tmp_path):
    import subprocess
    import sys

    single, before = partitioned
    run = copy_with(before, tmp_path / "run", ["launch.dask_workers=2"])  # no stage key reads launch
    script = tmp_path / "resample.py"
    script.write_text(RESAMPLE.format(root=str(run.root)))
    process = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parents[1],
                               env={**os.environ, "OMP_NUM_THREADS": "1", "SPO_PROGRESS": "0"})
    parts = run.iteration_dir(0) / ".parts" / "resample"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(parts.glob("*.parquet")) and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the stage finished before a shard could be interrupted"
    process.send_signal(signal.SIGKILL)  # the stage and, with it, its local cluster's workers
    process.wait()
    finished = list(parts.glob("*.parquet"))
    assert finished and not manifest_path(run.artifact(0, "values")).exists()
    report = find_stage("resample", run.config())[0](run.root, 0)
    assert report.counters["shards/reused"] >= len(finished)
    assert sha(run.artifact(0, "mc_samples")) == sha(single.artifact(0, "mc_samples"))
    assert not parts.exists()
