"""Where demo runs part: the warm start and the training signal of each run, side by side.

    python benchmarks/demo_trajectories.py data/runs/demo-seeds/*/tiny-s*
    python benchmarks/demo_trajectories.py RUN ... --window 10

Per run, one row: the warm start (SFT steps, the band check's held-out accuracy on training questions, and
checkpoint 0's accuracy on the test questions, which the check does not see), then per window of
iterations the means of the sampled reward, the share of episodes whose every advantage is 0 (no signal),
the clip fraction, the approximate KL of the update, the trained tokens per iteration, and the held-out
greedy accuracy of the window's last evaluated checkpoint. Read from the runs' artifacts; nothing is recomputed.
"""

import argparse
import json
import statistics
from pathlib import Path

import pyarrow.parquet as pq

from stages.runtime.run_dir import RunDir


def warm_start(run: RunDir) -> dict:
    report = json.loads((run.artifact(0, "warmstart").parent / "warmstart.parquet.manifest.json").read_text())["report"]
    counters = report["counters"]
    return {"steps": counters.get("warmstart/selected_step"), "check": counters.get("warmstart/held_out_accuracy"),
            "test": accuracy(run, 0)}


def accuracy(run: RunDir, i: int) -> float | None:
    path = run.artifact(i, "eval")
    if not path.exists():
        return None
    rows = pq.read_table(path, columns=["correct"]).column("correct").to_pylist()
    return sum(rows) / len(rows)


def signal(run: RunDir, i: int) -> dict | None:
    """Iteration i's sampled reward, no-signal share, clip fraction, approximate KL and trained tokens."""
    try:
        rewards = pq.read_table(run.artifact(i, "rollouts"), columns=["reward"]).column("reward").to_pylist()
        advantages = pq.read_table(run.artifact(i, "episodes"), columns=["advantages"]).column("advantages").to_pylist()
        steps = pq.read_table(run.artifact(i, "train_metrics")).to_pylist()
    except FileNotFoundError:
        return None
    return {"reward": statistics.fmean(rewards),
            "no_signal": statistics.fmean(not any(a) for a in advantages),
            "clipfrac": statistics.fmean(s["clipfrac"] for s in steps),
            "kl": statistics.fmean(s["approx_kl"] for s in steps),
            "tokens": sum(s["tokens"] for s in steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--window", type=int, default=10, help="iterations per window")
    args = parser.parse_args()
    print("| run | SFT steps | check | ckpt 0 test | iterations | reward | no signal | clipfrac | KL | trained tok "
          "| test at end |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for folder in args.runs:
        run = RunDir(Path(folder))
        w = warm_start(run)
        last = run.config().iterations
        for start in range(0, last, args.window):
            rows = [s for i in range(start, min(start + args.window, last)) if (s := signal(run, i))]
            if not rows:
                break
            end = min(start + args.window, last)
            head = (f"| {folder} | {w['steps']} | {w['check']:.3f} | {w['test']:.3f} |" if start == 0 else
                    "| | | | |")
            test = next((a for i in range(end, start, -1) if (a := accuracy(run, i)) is not None), None)
            print(head + f" {start}-{end - 1} | " + " | ".join(
                f"{statistics.fmean(r[k] for r in rows):{fmt}}" for k, fmt in
                (("reward", ".3f"), ("no_signal", ".2f"), ("clipfrac", ".3f"), ("kl", ".4f"), ("tokens", ".0f")))
                + f" | {'' if test is None else f'{test:.3f}'} |")


if __name__ == "__main__":
    main()
