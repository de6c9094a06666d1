"""The credit probe on net credit: advantages summed per (state, token) pair over the rollouts that share it.

    python benchmarks/net_credit.py data/runs/tiny-equal-questions --arms spo-chain,grpo
    python benchmarks/net_credit.py data/runs/arith5 --arms spo-chain,grpo --seeds 1,2

The `credit` stage splits each episode's negative advantage mass by where its tokens lie relative to the first
wrong token. A policy-gradient step, though, moves log p(token | state) by the sum over every rollout that took
that token in that state, so advantages of rollouts sharing a prefix cancel or add up
(`spo.credit.net_credit`). For every run `<arm>-s<seed>` of a comparison folder and every iteration, this
reads episodes.parquet and credit.parquet, groups the chain rollouts by question and prints per arm, side by
side: the share of the negative mass on the first wrong token and on the correct tokens before it, per episode
(the `credit` stage's numbers) and net, and the mean net advantage of the correct pairs on failed paths that
have one. Shares are per iteration (sums over its episodes), averaged over iterations, then mean ± sd over
seeds. Tree edges are left out (a tree's shared prefixes are already one node). Benchmarks never assert.
"""

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spo.credit import CreditSplit, net_credit
from stages.runtime.artifacts import read_table
from stages.runtime.run_dir import RunDir


def iteration_splits(run: RunDir, iteration: int) -> tuple[list[CreditSplit], list[CreditSplit]]:
    """Per-episode splits (as the credit stage stored them) and per-question net splits of one iteration."""
    credit = {r["episode_id"]: r for r in read_table(run.artifact(iteration, "credit")).to_pylist()}
    groups = defaultdict(list)
    for episode in read_table(run.artifact(iteration, "episodes")).to_pylist():
        if episode["kind"] == "rollout":
            groups[episode["question_id"]].append(episode)
    per_episode = [CreditSplit(c["negative_mass"], c["on_first_wrong"], c["on_correct"], c["after_first_wrong"],
                               c["correct_advantage_sum"], c["correct_trained"])
                   for c in credit.values() if c["kind"] == "rollout"]
    net = [net_credit([e["response_ids"] for e in group], [e["advantages"] for e in group],
                      [credit[e["episode_id"]]["first_wrong"] for e in group]) for group in groups.values()]
    return per_episode, net


def shares(splits: list[CreditSplit]) -> tuple[float, float, float] | None:
    """(on the first wrong token, on correct tokens, mean advantage of correct ones) of one iteration's mass."""
    negative = sum(s.negative for s in splits)
    if negative == 0:
        return None
    count = sum(s.correct_count for s in splits)
    return (sum(s.on_first_wrong for s in splits) / negative, sum(s.on_correct for s in splits) / negative,
            sum(s.correct_sum for s in splits) / count if count else 0.0)


def run_means(run: RunDir) -> dict[str, tuple[float, float, float]]:
    """Means over a run's iterations of the per-episode and the net shares."""
    found = {"episode": [], "net": []}
    iteration = 0
    while run.artifact(iteration, "credit").exists():
        for kind, splits in zip(("episode", "net"), iteration_splits(run, iteration)):
            if (measured := shares(splits)) is not None:
                found[kind].append(measured)
        iteration += 1
    if not found["net"]:
        raise SystemExit(f"{run.root}: no iteration with a credit.parquet and negative advantages")
    return {kind: tuple(statistics.fmean(column) for column in zip(*rows)) for kind, rows in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a comparison's folder (data/runs/<name>)")
    parser.add_argument("--arms", required=True, help="comma-separated arm labels")
    parser.add_argument("--seeds", help="comma-separated seeds (default: every run of the arm in the folder)")
    args = parser.parse_args()
    columns = ["first wrong, per episode", "first wrong, net", "correct, per episode", "correct, net",
               "A of correct, per episode", "A of correct, net"]
    print("| arm | seeds | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 2) + "|")
    for arm in args.arms.split(","):
        runs = (sorted(args.folder.glob(f"{arm}-s*/run.json")) if args.seeds is None
                else [args.folder / f"{arm}-s{seed}" / "run.json" for seed in args.seeds.split(",")])
        if not runs or not all(path.exists() for path in runs):
            raise SystemExit(f"{args.folder}: no run of arm {arm!r} for every seed asked for "
                             f"(expected {arm}-s<seed>/run.json)")
        means = [run_means(RunDir(path.parent)) for path in runs]
        cells = []
        for index, sign in ((0, ""), (1, ""), (2, "+")):  # shares, then a signed mean advantage
            for kind in ("episode", "net"):
                values = [m[kind][index] for m in means]
                spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
                cells.append(f"{statistics.fmean(values):{sign}.3f}{spread}")
        print(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
