"""A run is a history (stages/runtime/history.py): code edits, config changes, forks and growth on real tiny runs.

Real parts: real Prefect flow runs, real Parquet, a real tiny Llama; code edits are made in a copy of the
repository that a `spo` child process runs from, so this checkout is never edited.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import main as spo
from flows.spo_run import spo_run
from spo.schedules import warmup_linear_decay
from stages.runtime.fingerprint import closure
from stages.runtime.history import ConfigChangeRefused, fork, reopen
from stages.runtime.registry import iteration_stages, start_stages
from stages.runtime.run_dir import RunDir, create_run, load_preset
from tests.helpers import SPO_CHILD, TINY_OVERRIDES, manifest_times, recomputed_stages

REPO = Path(__file__).resolve().parents[1]


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".prefect" not in p.parts}


@pytest.fixture(scope="module")
def two_iterations(prefect_harness, tmp_path_factory) -> RunDir:
    """A tiny run through two iterations, evaluated after each, with the linear schedule whose horizon `--more`
    moves (tiny's own is constant)."""
    cfg = load_preset("tiny").with_overrides([*TINY_OVERRIDES, "iterations=2", "eval.every=1",
                                              "train.lr_schedule=linear"])
    run = create_run(tmp_path_factory.mktemp("history") / "run", cfg)
    spo_run(str(run.root))
    return run


def copy_run(run: RunDir, tmp_path: Path, name: str = "run") -> RunDir:
    return RunDir(Path(shutil.copytree(run.root, tmp_path / name, ignore=shutil.ignore_patterns(".prefect*"))))


def spo_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`spo ARGS` in a child process that imports the project from `repo`."""
    env = {**os.environ, "SPO_PROGRESS": "0"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-c", SPO_CHILD, *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.mark.slow  # `spo` child processes
def test_a_comment_edit_recomputes_nothing_and_an_edit_to_the_loss_makes_only_train_stale(two_iterations,
                                                                                            tmp_path):
    run = copy_run(two_iterations, tmp_path)
    repo = tmp_path / "repo"
    for folder in ("spo", "stages", "schemas", "flows", "data/presets", "tests"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with (repo / "spo" / "seeds.py").open("a") as handle:
        handle.write("# a comment appended by tests/test_history.py\n")
    before = manifest_times(run.root)
    start = time.perf_counter()
    done = spo_in(repo, "run", "--run", str(run.root))
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert manifest_times(run.root) == before, "a finished stage was recomputed after a comment edit"
    print(f"\nresume after a comment edit: {seconds:.1f} s, nothing recomputed")

    with (repo / "spo" / "losses.py").open("a") as handle:
        handle.write("\nEDITED_BY_TEST = True\n")
    statuses = {}
    for stage in ("generate", "partition", "resample", "advantages", "train"):
        out = spo_in(repo, "stage", stage, "--run", str(run.root), "--iteration", "1")
        assert out.returncode == 0, out.stderr[-3000:]
        statuses[stage] = out.stdout.split(": ", 1)[1].split(";")[0]
    assert statuses == {"generate": "cached", "partition": "cached", "resample": "cached",
                        "advantages": "cached", "train": "stale: code changed"}, statuses
    assert manifest_times(run.root) == before, "`spo stage` recomputed a finished stage without --force"
    shown = spo_in(repo, "inspect", str(run.root))
    stale = [line for line in shown.stdout.splitlines() if line.startswith("stale: code changed")]
    assert len(stale) == 1 and "train 0001" in stale[0] and "generate" not in stale[0], shown.stdout[-2000:]
    assert "spo.losses" in closure("stages.critic_train")  # critic-train goes stale with train


def test_frontier_changes_apply_and_grow_the_run_while_a_read_field_is_refused(two_iterations, tmp_path):
    run = copy_run(two_iterations, tmp_path)
    cfg = run.config()
    with pytest.raises(ConfigChangeRefused, match=r"train.lr changed, which finished stages read \(first: train "
                                                  r"0000\).*--from 0.*spo fork"):
        reopen(run.root, cfg.with_overrides(["train.lr=0.5"]))
    checkpoints = {i: file_bytes(run.checkpoint(i)) for i in (0, 1, 2)}
    before = manifest_times(run.root)
    # --more past `iterations` grows the run; the other fields only affect work not yet done
    assert spo(["run", "--run", str(run.root), "--more", "1", "--set", "eval.every=3", "--set", "log.samples_every=0",
                "--set", "retention.optimizer_states=0"]) == 0
    assert run.config().iterations == 3 and run.config().eval.every == 3
    assert run.changes()[-1]["how"] == "frontier" and run.changes()[-1]["from_iteration"] == 2
    assert run.config_at(1).iterations == 2 and run.config_at(2).iterations == 3
    assert recomputed_stages(run.root, before) == {f"{s}-2" for s in iteration_stages(cfg)} | {"evaluate-3"}
    assert {i: file_bytes(run.checkpoint(i)) for i in (0, 1, 2)} == checkpoints
    # past the planned end the schedule of the new horizon applies at the global step (docs/design.md#optimizer)
    metrics = pq.read_table(run.artifact(2, "train_metrics")).to_pylist()
    per_iteration = len(pq.read_table(run.artifact(1, "train_metrics")))

    def schedule(horizon: int) -> list[float]:
        total = horizon * per_iteration
        warmup = min(math.ceil(cfg.train.warmup_ratio * total), total - 1)
        return [cfg.train.lr * warmup_linear_decay(min(m["step"] - 1, total - 1), total, warmup) for m in metrics]

    assert [m["lr"] for m in metrics] == pytest.approx(schedule(3))
    assert schedule(3) != pytest.approx(schedule(2))


def test_fork_shares_history_by_hard_links_and_leaves_the_source_untouched(two_iterations, tmp_path, capsys):
    source = copy_run(two_iterations, tmp_path, "source")
    before = file_bytes(source.root)
    new = tmp_path / "fork"
    assert spo(["fork", str(source.root), str(new), "--from", "1", "--set", "train.lr=0.002"]) == 0
    assert "stages shared by hard link" in capsys.readouterr().out
    fork = RunDir(new)
    assert fork.config().train.lr == 0.002 and fork.changes()[-1]["how"] == "fork"
    for path in (fork.artifact(0, "episodes"), fork.checkpoint(1) / "model.safetensors", fork.tokenizer()):
        target = path if path.is_file() else next(p for p in path.rglob("*") if p.is_file())
        original = source.root / target.relative_to(fork.root)
        assert target.stat().st_ino == original.stat().st_ino, f"{target} is not a hard link"
    assert not fork.artifact(1, "rollouts").exists() and not fork.checkpoint(2).exists()
    assert fork.artifact(1, "eval").exists()  # the evaluation of checkpoint 1 is history too
    spo_run(str(fork.root))
    assert file_bytes(source.root) == before, "the source run changed"
    assert json.loads((fork.root / "checkpoints/0002.manifest.json").read_text())["sha256"] != \
        json.loads((source.root / "checkpoints/0002.manifest.json").read_text())["sha256"]
    assert spo(["fork", str(source.root), str(new), "--from", "1"]) == 2  # never over an existing run


def test_fork_from_0_shares_the_warm_start_and_its_evaluation(two_iterations, tmp_path):
    source = copy_run(two_iterations, tmp_path, "source")
    forked, shared = fork(source, tmp_path / "fork", source.config(), 0)
    assert shared == len(start_stages(source.config())) + 1  # the warm start's stages and evaluate-0
    assert forked.checkpoint(0).exists() and forked.artifact(0, "eval").exists()
    assert not forked.artifact(0, "rollouts").exists()


def test_errors_on_a_damaged_run_are_one_line_naming_the_path_and_the_repair(two_iterations, tmp_path, capsys):
    run = copy_run(two_iterations, tmp_path)
    shutil.rmtree(run.tokenizer())
    assert spo(["inspect", str(run.root), "--iteration", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tokenizer" in err and f"spo verify {run.root}" in err, err
    (run.checkpoint(1) / "model.safetensors").unlink()
    assert spo(["stage", "generate", "--run", str(run.root), "--iteration", "1", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoints/0001" in err and "spo run --run" in err, err


def test_inspect_shows_which_code_and_packages_made_each_iteration(two_iterations, capsys):
    assert spo(["inspect", str(two_iterations.root)]) == 0
    out = capsys.readouterr().out
    assert "iterations 0-2: code " in out and "torch 2" in out, out
