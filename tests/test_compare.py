"""`spo compare` end to end: a 2-iteration comparison through the CLI, its runs in child processes.

Checked: one warm start per seed and warm-start config (the others are hard links of it), compare.parquet
equal to the runs' own summaries, the table's numbers recomputed from the Parquet, the plots, and a
second `spo compare` that finds everything finished.
"""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from spo.stats import paired_interval
from stages.reports.compare import ArmRun, compare_rows
from stages.reports.summary import iteration_summary
from stages.runtime.run_dir import RunDir
from tests.helpers import comparison_file

pytestmark = pytest.mark.slow  # a comparison's child runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """smoke (3 arms x 2 seeds), two of its arms alone, smoke again, then other: one arm as in smoke, one with
    another learning rate."""
    folder = tmp_path_factory.mktemp("compare")
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect_home"), "OMP_NUM_THREADS": "1"}

    def compare(path: Path, *options: str) -> str:
        command = [sys.executable, "-m", "flows.cli", "compare", str(path), "--root", str(folder / "runs"),
                   "--parallel", "2", "--threads", "1", *options]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    smoke = comparison_file(folder, "smoke", [1, 2], [
        ("chain", "tiny", []),
        ("grpo", "tiny-grpo", ["sample.questions_per_iteration=4", "train.episodes_per_iteration=16"]),
        ("chain-longer-sft", "tiny", ["warmstart.max_steps=9"])])
    first, only, again = compare(smoke), compare(smoke, "--arms", "grpo,chain"), compare(smoke)
    third = compare(comparison_file(folder, "other", [1], [("chain-again", "tiny", []),
                                                           ("chain-lr", "tiny", ["train.lr=3e-4"])]))
    return folder / "runs" / "smoke", first, again, third, only


def inode(run: Path, part: str) -> int:
    return (run / part).stat().st_ino


def runs_of(root: Path) -> list[ArmRun]:
    return [ArmRun(arm, seed, RunDir(root / f"{arm}-s{seed}")) for seed in (1, 2)
            for arm in ("chain", "grpo", "chain-longer-sft")]


def test_one_warm_start_per_seed_and_config(compared):
    root, first, *_ = compared
    assert "6 runs, 4 warm starts" in first

    def warm_start(arm: str, seed: int) -> int:
        return inode(root / f"{arm}-s{seed}", "checkpoints/0000/model.safetensors")

    for seed in (1, 2):
        assert warm_start("chain", seed) == warm_start("grpo", seed), "arms of one seed share one warm start"
        assert warm_start("chain-longer-sft", seed) != warm_start("chain", seed), "another warm-start config"
    assert warm_start("chain", 1) != warm_start("chain", 2)
    logs = sorted(p.name for p in (root / "logs").iterdir())
    assert [n for n in logs if n.endswith("-warmstart.log")] == [
        "chain-longer-sft-s1-warmstart.log", "chain-longer-sft-s2-warmstart.log", "chain-s1-warmstart.log",
        "chain-s2-warmstart.log"]


def test_a_second_compare_finds_every_run_finished(compared):
    _, _, again, _, _ = compared
    assert "0 of 6 runs to (re)run" in again


def test_arms_runs_and_reports_only_those_arms_the_first_as_reference(compared):
    *_, only = compared
    assert "smoke: 4 runs, 2 warm starts" in only and "0 of 4 runs to (re)run" in only
    rows = [line.split(" | ")[0].removeprefix("| ") for line in only.splitlines() if line.startswith("| ")]
    assert rows == ["arm", "---", "grpo", "chain"]  # grpo first: the reference of the paired differences


def test_compare_parquet_agrees_with_the_runs(compared):
    root, *_ = compared
    frame = pl.read_parquet(root / "compare.parquet")
    assert frame.height == 6 * 3  # checkpoints 0, 1, 2 of each run
    assert frame.to_dicts() == compare_rows(runs_of(root))
    for r in runs_of(root):
        summary = iteration_summary(r.run)
        own = frame.filter((pl.col("arm") == r.arm) & (pl.col("seed") == r.seed)).sort("iteration")
        assert own["accuracy"].to_list() == pytest.approx([s["eval_greedy"] for s in summary])
        assert own["sampled_tokens"].to_list() == [0, summary[0]["sampled_tokens"],
                                                   summary[0]["sampled_tokens"] + summary[1]["sampled_tokens"]]
        questions = r.run.config().sample.questions_per_iteration  # no dynamic sampling here
        assert own["questions"].to_list() == [0, questions, 2 * questions]
        assert own["credit_first_wrong"].to_list()[:2] == pytest.approx([s["credit_first_wrong"] for s in summary[:2]])


def test_the_table_is_recomputed_from_the_parquet(compared):
    root, first, *_ = compared
    frame = pl.read_parquet(root / "compare.parquet")
    gains = {}
    for arm in ("chain", "grpo", "chain-longer-sft"):
        per_seed = []
        for seed in (1, 2):
            own = frame.filter((pl.col("arm") == arm) & (pl.col("seed") == seed)).sort("iteration")
            per_seed.append(own["accuracy"][-1] - own["accuracy"][0])
        gains[arm] = per_seed
    table = (root / "compare.md").read_text()
    assert table in first  # printed as written
    for arm, gain in gains.items():
        mean = 100 * sum(gain) / 2
        (row,) = [line for line in table.splitlines() if line.startswith(f"| {arm} | ")]
        assert f"| {mean:+.1f} ± " in row, row
    diff = paired_interval(gains["grpo"], gains["chain"])
    assert f"{100 * diff.mean:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]" in table
    for name in ("accuracy_vs_iteration.png", "accuracy_vs_sampled_tokens.png", "accuracy_vs_seconds.png"):
        assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_comparison_reuses_finished_stages_with_the_same_keys(compared):
    root, *_, third, _ = compared
    other = root.parent / "other"
    same = other / "chain-again-s1"
    assert "other: 2 runs, 1 warm starts" in third and "1 of 2 runs to (re)run" in third

    # the identical arm is every stage of smoke's chain-s1, linked; the other learning rate shares the warm
    # start, its evaluation and the first iteration's prompts and rollouts (their keys do not read train.lr)
    for part in ("checkpoints/0002/model.safetensors", "iterations/0001/episodes.parquet", "iterations/0002/eval.parquet"):
        assert inode(same, part) == inode(root / "chain-s1", part)
    lr = other / "chain-lr-s1"
    for part in ("checkpoints/0000/model.safetensors", "iterations/0000/rollouts.parquet"):
        assert inode(lr, part) == inode(root / "chain-s1", part)
    assert inode(lr, "checkpoints/0001/model.safetensors") != inode(root / "chain-s1", "checkpoints/0001/model.safetensors")
    assert not (other / "logs" / "chain-again-s1.log").exists(), "nothing left to run for the identical arm"
