"""The chain-length study: does SPO-chain's edge over GRPO move with the number of reasoning steps?

    spo compare chain-length-3 --parallel 2          # then chain-length-5, chain-length-8 (hours each)
    python benchmarks/chain_length.py                 # the table and the plot over the lengths finished so far
    python benchmarks/chain_length.py --root /tmp/runs --out /tmp/chain_length.png

Reads `ROOT/chain-length-N/compare.parquet` (written by `spo compare`) for every N found and prints, per
length, `spo compare`'s own table (stages/reports/compare.py): per arm the gain in held-out greedy accuracy
(mean ± sd over seeds), the paired difference in gain to the comparison's first arm (SPO-chain) with its 95%
Student-t interval, questions, sampled tokens and stage seconds per iteration, and the credit probe. Then the
same table with each run's final accuracy taken as the mean of its last `--last` evaluations (default 5:
iterations 64-80 at the tiny preset's evaluation every 4), less of one evaluation's noise (256 greedy answers:
about ±3 points of binomial sd). The plot puts the paired difference against the number of chained sums
(operands - 1), one line per arm, with the intervals as error bars: one panel per reading of "final". Last,
the training reward (the rollouts' accuracy) per quarter of the iterations, per arm and length.
A length whose comparison is unfinished is skipped with a line saying so.
Benchmarks never assert.
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq

from stages.reports.compare import compare_table, table_markdown
from stages.reports.summary import save_figure
from stages.runtime.run_dir import REPO_ROOT

FOLDER = re.compile(r"chain-length-(\d+)")


def lengths(root: Path) -> dict[int, list[dict]]:
    """Operand count -> the rows of its compare.parquet, for each finished chain-length comparison."""
    found = {}
    for folder in sorted(root.glob("chain-length-*")):
        match = FOLDER.fullmatch(folder.name)
        parquet = folder / "compare.parquet"
        if not match:
            continue
        if not parquet.is_file():
            print(f"{folder}: no compare.parquet yet (run `spo compare {folder.name}` to the end); skipped")
            continue
        found[int(match.group(1))] = pq.read_table(parquet).to_pylist()
    return found


def arm_order(rows: list[dict]) -> list[str]:
    """The arms in the comparison's order (compare.parquet keeps it: the reference first)."""
    return list(dict.fromkeys(r["arm"] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "data" / "runs",
                        help="folder holding the chain-length-N comparison folders (spo compare's --root)")
    parser.add_argument("--out", type=Path, default=None, help="plot path (default ROOT/chain_length.png)")
    parser.add_argument("--last", type=int, default=5, help="evaluations averaged in the second table (default 5)")
    args = parser.parse_args()
    found = lengths(args.root)
    if not found:
        raise SystemExit(f"{args.root}: no chain-length-N/compare.parquet; run `spo compare chain-length-3` first")
    readings = {}
    for last in (1, args.last):
        readings[last] = {n: compare_table(rows, arm_order(rows), last=last) for n, rows in sorted(found.items())}
        for n, table in readings[last].items():
            print(table_markdown(table, f"{n} operands ({n - 1} chained sums)"), end="\n\n")
    print(reward_quarters(found))
    out = args.out or args.root / "chain_length.png"
    plot(readings, out)
    print(f"plot: {out}")


def reward_quarters(found: dict[int, list[dict]]) -> str:
    """The rollouts' accuracy (the training reward) per quarter of the iterations, mean over seeds, per arm and
    length, in points: how alike the arms train, apart from the held-out evaluations."""
    arms = arm_order(found[min(found)])
    lines = ["**Training reward** (rollout accuracy, points, mean over seeds, per quarter of the iterations)", "",
             "| operands | " + " | ".join(arms) + " |", "|" + " --- |" * (len(arms) + 1)]
    for n, rows in sorted(found.items()):
        trained = [r for r in rows if r["iteration"] > 0 and r["rollout_accuracy"] is not None]
        end = max(r["iteration"] for r in trained)
        cells = []
        for arm in arms:
            quarters = [[r["rollout_accuracy"] for r in trained
                         if r["arm"] == arm and (r["iteration"] - 1) * 4 // end == q] for q in range(4)]
            cells.append(", ".join(f"{100 * sum(q) / len(q):.1f}" for q in quarters if q))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(readings: dict[int, dict[int, list[dict]]], out: Path) -> None:
    """Per reading of "final" (the last evaluation, the mean of the last few), the paired difference to the
    reference arm against the chained sums, with the intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(readings), figsize=(6 * len(readings), 4), sharey=True, squeeze=False)
    for ax, (last, tables) in zip(axes[0], readings.items()):
        panel(ax, tables, "final: the last evaluation" if last == 1 else f"final: the mean of the last {last}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)


def panel(ax, tables: dict[int, list[dict]], title: str) -> None:
    reference = tables[min(tables)][0]["arm"]
    arms = [a for a in dict.fromkeys(r["arm"] for t in tables.values() for r in t) if a != reference]
    for k, arm in enumerate(arms):
        xs, ys, lows, highs = [], [], [], []
        for n, table in tables.items():
            r = next((r for r in table if r["arm"] == arm), None)
            if r is None or r["diff_mean"] is None:  # not run at this length, or its reference
                continue
            xs.append(n - 1 + 0.06 * (k - (len(arms) - 1) / 2))  # side by side at each length
            ys.append(100 * r["diff_mean"])
            lows.append(100 * (r["diff_mean"] - (r["diff_low"] if r["diff_low"] is not None else r["diff_mean"])))
            highs.append(100 * ((r["diff_high"] if r["diff_high"] is not None else r["diff_mean"]) - r["diff_mean"]))
        ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=4, label=f"{arm} - {reference}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks([n - 1 for n in tables])
    ax.set_xlim(min(tables) - 2, max(tables))  # one chained sum either side of the lengths run
    ax.set_xlabel("chained sums (operands - 1)")
    ax.set_ylabel(f"paired Δ gain vs {reference} (points, 95% CI)")
    ax.set_title(f"Does the gap move with the chain's length? ({title})", fontsize=9)
    ax.legend()


if __name__ == "__main__":
    main()
