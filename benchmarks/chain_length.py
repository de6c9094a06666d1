"""The chain-length study: does SPO-chain's edge over GRPO move with the number of reasoning steps?

    spo compare chain-length-3 --parallel 2          # then chain-length-5, chain-length-8 (hours each)
    python benchmarks/chain_length.py                 # the table and the plot: the record, then your runs
    python benchmarks/chain_length.py --root data/runs   # ... of your runs alone (a rerun on your machine)
    python benchmarks/chain_length.py --record        # ... and keep the rows in docs/results/ (committed)
    python benchmarks/chain_length.py --root /tmp/runs --out /tmp/chain_length.png

Reads `ROOT/chain-length-N/compare.parquet` (written by `spo compare`) for every N and every ROOT (by default
docs/results, the committed record, then data/runs) and joins each length's runs: a length can be measured a
few seeds at a time (`spo compare chain-length-8 --seeds 6,7`), on another day or machine, each seed's arms
together. The same (arm, seed) in two files must have the same rows (otherwise one clear error). Prints, per
length, `spo compare`'s own table (stages/reports/compare.py): per arm the gain in held-out greedy accuracy
(mean ± sd over seeds), the paired difference in gain to the comparison's first arm (SPO-chain) with its 95%
Student-t interval, questions, sampled tokens and stage seconds per iteration, and the credit probe. Then the
same table with each run's final accuracy taken as the mean of its last `--last` evaluations (default 5:
iterations 64-80 at the tiny preset's evaluation every 4), less of one evaluation's noise (256 greedy answers:
about ±3 points of binomial sd). The plot puts the paired difference against the number of chained sums
(operands - 1), one line per arm, with the intervals as error bars: one panel per reading of "final". Last,
the training reward (the rollouts' accuracy) per quarter of the iterations, per arm and length.
`--record` writes each length's joined rows to docs/results/chain-length-N/compare.parquet, so that the runs
behind docs/results.md's tables outlive the machine that ran them (a record only ever gains runs: it is one
of the inputs it is rebuilt from).
Benchmarks never assert.
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.compare import COMPARE
from stages.reports.compare import compare_table, merge_compare_rows, table_markdown
from stages.reports.summary import save_figure
from stages.runtime.run_dir import REPO_ROOT

FOLDER = re.compile(r"chain-length-(\d+)")
RECORD = REPO_ROOT / "docs" / "results"
"""The committed rows of every chain-length comparison measured so far (`--record`)."""


def lengths(roots: list[Path]) -> dict[int, list[dict]]:
    """Operand count -> its runs' compare.parquet rows, joined over `roots`, for each length found."""
    sources: dict[int, dict[Path, list[dict]]] = {}
    for root in roots:
        for folder in sorted(root.glob("chain-length-*")):
            match = FOLDER.fullmatch(folder.name)
            parquet = folder / "compare.parquet"
            if not match:
                continue
            if not parquet.is_file():
                print(f"{folder}: no compare.parquet yet (run `spo compare {folder.name}` to the end); skipped")
                continue
            sources.setdefault(int(match.group(1)), {})[parquet] = pq.read_table(parquet).to_pylist()
    return {n: merge_compare_rows(found) for n, found in sorted(sources.items())}


def record(found: dict[int, list[dict]]) -> None:
    """Write each length's rows to RECORD/chain-length-N/compare.parquet (temporary name, then rename)."""
    from stages.runtime.artifacts import staged_table

    for n, rows in found.items():
        path = RECORD / f"chain-length-{n}" / "compare.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = sorted({(r["arm"], r["seed"]) for r in rows})
        staged_table(path, pa.Table.from_pylist(rows, schema=COMPARE)).replace(path)
        print(f"recorded: {path.relative_to(REPO_ROOT)} ({len(runs)} runs, seeds "
              f"{', '.join(str(s) for s in sorted({seed for _, seed in runs}))})")


def arm_order(rows: list[dict]) -> list[str]:
    """The arms in the comparison's order (compare.parquet keeps it: the reference first)."""
    return list(dict.fromkeys(r["arm"] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, action="append", default=None,
                        help="a folder holding chain-length-N comparison folders (spo compare's --root); "
                             "repeatable (default: docs/results, then data/runs)")
    parser.add_argument("--out", type=Path, default=None, help="plot path (default: the last root's chain_length.png)")
    parser.add_argument("--last", type=int, default=5, help="evaluations averaged in the second table (default 5)")
    parser.add_argument("--record", action="store_true",
                        help="write each length's joined rows to docs/results/chain-length-N/compare.parquet")
    args = parser.parse_args()
    roots = args.root or [RECORD, REPO_ROOT / "data" / "runs"]
    if args.record and RECORD not in roots:
        roots = [RECORD, *roots]  # the record is rebuilt from itself and the new runs: it never loses a run
    try:
        found = lengths(roots)
    except ValueError as error:  # your own rerun of a length beside the record's runs of the same seeds
        raise SystemExit(f"{error}\nto read only your own runs: --root data/runs") from None
    if not found:
        raise SystemExit(f"{', '.join(map(str, roots))}: no chain-length-N/compare.parquet; run "
                         f"`spo compare chain-length-3` first")
    readings = {}
    for last in (1, args.last):
        readings[last] = {n: compare_table(rows, arm_order(rows), last=last) for n, rows in found.items()}
        for n, table in readings[last].items():
            seeds = sorted({r["seed"] for r in found[n]})
            print(table_markdown(table, f"{n} operands ({n - 1} chained sums), seeds "
                                        f"{', '.join(map(str, seeds))}"), end="\n\n")
    print(reward_quarters(found))
    out = args.out or roots[-1] / "chain_length.png"
    plot(readings, out)
    print(f"plot: {out}")
    if args.record:
        record(found)


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
