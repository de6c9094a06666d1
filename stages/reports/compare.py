"""A comparison's runs and its report: `compare.parquet`, the table over seeds, the plots.

Every (arm, seed) is an ordinary run under `data/runs/<comparison>/<arm>-s<seed>/`. Arms of one seed
with the same warm-start config share one warm start: it is computed in the first run of the group
and hard-linked into the others under the same stage key (stages/runtime/share.py). The report compares arms
seed by seed; see docs/design.md#comparisons for the statistics.
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas.compare import COMPARE
from spo.comparison import ComparisonConfig
from spo.stats import paired_interval, summarize
from stages.reports.summary import CREDIT_KEYS, iteration_summary, save_figure
from stages.runtime.artifacts import cache_key, is_finished, supersede, write_table
from stages.runtime.history import reopen
from stages.runtime.registry import unfinished_stages
from stages.runtime.run_dir import RUNS_DIR, RunDir, arm_config
from stages.runtime.share import share_outputs, share_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArmRun:
    """One run of a comparison."""

    arm: str
    seed: int
    run: RunDir


def comparison_dir(comparison: ComparisonConfig, root: Path | None = None) -> Path:
    """The comparison's folder: `<root>/<name>`, root defaulting to data/runs."""
    return (RUNS_DIR if root is None else root) / comparison.name


def create_runs(comparison: ComparisonConfig, folder: Path, seeds: tuple[int, ...] | None = None) -> list[ArmRun]:
    """Create (or reopen) the run of every (arm, seed) as `<folder>/<arm>-s<seed>`, seeds outermost; an arm whose
    config changed in a field its finished stages read is refused (stages/runtime/history.py)."""
    runs = []
    for seed in seeds or comparison.seeds:
        for arm in comparison.arms:
            cfg = arm_config(comparison, arm, seed)
            runs.append(ArmRun(arm.label, seed, reopen(folder / f"{arm.label}-s{seed}", cfg)))
    return runs


def warm_start_groups(runs: list[ArmRun]) -> list[list[ArmRun]]:
    """Runs whose warm start has the same stage key (same warm-start config and seed), in run order."""
    from stages.warmstart import SPEC

    groups: dict[str, list[ArmRun]] = {}
    for r in runs:
        groups.setdefault(cache_key(SPEC, r.run, 0), []).append(r)
    return list(groups.values())


def reuse_finished(runs: list[ArmRun], root: Path) -> dict[str, int]:
    """Give each run the finished stages of other runs under `root` (other comparisons) with the same keys:
    from a run with the same config where there is one, else from any with the same seed, each sharing
    as far as the keys agree (stages/runtime/share.py). Returns `<arm>-s<seed>` -> stages reused."""
    mine = {r.run.root.resolve() for r in runs}
    donors = {}
    for path in sorted(root.glob("*/*/run.json")):
        if path.parent.resolve() in mine:
            continue
        try:
            donors[RunDir(path.parent)] = RunDir(path.parent).config()
        except ValueError as error:  # a run of an older spo whose config no longer loads: nothing to share
            log.info("not reusing %s: %s", path.parent, error)
    reused = {}
    for r in runs:
        cfg = r.run.config()
        same_seed = [d for d, c in donors.items() if c.seed == cfg.seed]
        identical = [d for d in same_seed if _without_name(donors[d]) == _without_name(cfg)]
        count = 0
        for donor in identical + [d for d in same_seed if d not in identical]:
            count += share_run(donor, r.run)
            if not unfinished_stages(r.run):
                break
        reused[f"{r.arm}-s{r.seed}"] = count
    return reused


def _without_name(cfg) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k != "name"}


def warm_start_finished(run: RunDir) -> bool:
    """Whether checkpoint 0 and its evaluation are finished under their current keys."""
    from stages.evaluate import SPEC as EVALUATE
    from stages.warmstart import SPEC as WARMSTART

    return is_finished(WARMSTART, run, 0) and is_finished(EVALUATE, run, 0)


def share_warm_start(group: list[ArmRun]) -> int:
    """Hard-link the first run's warm start and its evaluation into the others; return how many got it."""
    from stages.evaluate import SPEC as EVALUATE
    from stages.warmstart import SPEC as WARMSTART

    shared = 0
    for other in group[1:]:
        if share_outputs(WARMSTART, group[0].run, other.run, 0):
            shared += 1
            share_outputs(EVALUATE, group[0].run, other.run, 0)  # same checkpoint 0: same evaluation key
    return shared


def compare_rows(runs: list[ArmRun]) -> list[dict]:
    """One row per (arm, seed, checkpoint) with cumulative costs (schemas/compare.py)."""
    rows = []
    for r in runs:
        summary = iteration_summary(r.run)
        questions = sampled = trained = 0
        seconds = 0.0
        for row in summary:
            rows.append({
                "arm": r.arm, "seed": r.seed, "iteration": row["iteration"], "accuracy": row["eval_greedy"],
                "accuracy_sample": row["eval_sample"], "questions": questions, "sampled_tokens": sampled,
                "trained_tokens": trained, "seconds": seconds, "rollout_accuracy": row["train_accuracy"],
                **{column: row[column] for column in CREDIT_KEYS},
            })
            questions += row["questions"] or 0
            sampled += row["sampled_tokens"] or 0
            trained += row["trained_tokens"] or 0
            seconds += row["seconds"] or 0.0
    return rows


def write_compare_parquet(folder: Path, rows: list[dict]) -> Path:
    """Write compare.parquet; an earlier one with other contents moves to superseded/ (never lost)."""
    path = folder / "compare.parquet"
    table = pa.Table.from_pylist(rows, schema=COMPARE)
    if path.exists():
        import pyarrow.parquet as pq

        if pq.read_table(path).equals(table.replace_schema_metadata(COMPARE.metadata)):
            return path
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
        supersede([path], folder / "superseded" / f"compare-{stamp}")
    folder.mkdir(parents=True, exist_ok=True)
    write_table(path, table)
    return path


def merge_compare_rows(sources: dict[Path, list[dict]]) -> list[dict]:
    """One comparison's rows from several compare.parquet files (seeds run on different machines or days, each
    seed's arms together): the union of their runs. A run, an (arm, seed), found in two files must have the
    same rows in both; otherwise ValueError names the two files, as neither can be chosen silently."""
    runs: dict[tuple[str, int], tuple[Path, list[dict]]] = {}
    for path, rows in sources.items():
        own: dict[tuple[str, int], list[dict]] = {}
        for row in rows:
            own.setdefault((row["arm"], row["seed"]), []).append(row)
        for key, run_rows in own.items():
            if key in runs and runs[key][1] != run_rows:
                raise ValueError(f"{path}: the run {key[0]}-s{key[1]} is also in {runs[key][0]} with other rows; "
                                 f"expected each (arm, seed) measured once (move one of the two files aside)")
            runs.setdefault(key, (path, run_rows))
    return [row for _, run_rows in runs.values() for row in run_rows]


def _final(rows: list[dict], arm: str, seed: int, last: int = 1) -> tuple[float, float, dict]:
    """(warm-start accuracy, final accuracy: the mean of the last `last` evaluations, per-iteration means) of
    one run."""
    own = [r for r in rows if r["arm"] == arm and r["seed"] == seed]
    evaluated = [r for r in own if r["accuracy"] is not None]
    if not evaluated or evaluated[0]["iteration"] != 0:
        raise ValueError(f"run {arm}-s{seed}: no evaluation of checkpoint 0; run the comparison to the end")
    if last > 1 and len(evaluated) - 1 < last:
        raise ValueError(f"run {arm}-s{seed}: {len(evaluated) - 1} evaluations after the warm start, "
                         f"fewer than the last {last} to average")
    end = max(r["iteration"] for r in own)
    trained = [r for r in own if r["iteration"] < end]

    def mean(key: str) -> float | None:
        values = [r[key] for r in trained if r[key] is not None]
        return sum(values) / len(values) if values else None

    per_iteration = {"questions": own[-1]["questions"] / max(end, 1),
                     "sampled": own[-1]["sampled_tokens"] / max(end, 1),
                     "trained": own[-1]["trained_tokens"] / max(end, 1),
                     "seconds": own[-1]["seconds"] / max(end, 1),
                     **{key: mean(key) for key in CREDIT_KEYS}}
    final = sum(r["accuracy"] for r in evaluated[-last:]) / last
    return evaluated[0]["accuracy"], final, per_iteration


def compare_table(rows: list[dict], arms: list[str], level: float = 0.95, last: int = 1) -> list[dict]:
    """Per arm: final accuracy and gain over seeds, the paired difference to the first arm, costs, credit.

    The final accuracy of a run is its last evaluation (`spo compare`'s report), or with `last` > 1 the mean of
    its last `last` evaluations: less of one evaluation's noise, at the cost of looking at earlier checkpoints.
    """
    seeds = sorted({r["seed"] for r in rows})
    finals = {arm: {seed: _final(rows, arm, seed, last) for seed in seeds} for arm in arms}
    reference = arms[0]
    table = []
    for arm in arms:
        runs = [finals[arm][s] for s in seeds]
        final = summarize([f for _, f, _ in runs])
        gain = summarize([f - w for w, f, _ in runs])
        diff = paired_interval([finals[arm][s][1] - finals[arm][s][0] for s in seeds],
                               [finals[reference][s][1] - finals[reference][s][0] for s in seeds], level)
        costs = {key: summarize([c[key] for _, _, c in runs]).mean
                 for key in runs[0][2] if all(c[key] is not None for _, _, c in runs)}
        table.append({
            "arm": arm, "seeds": final.n, "last": last, "final_mean": final.mean, "final_std": final.std,
            "gain_mean": gain.mean, "gain_std": gain.std, "gain_min": gain.low,
            "diff_mean": None if arm == reference else diff.mean,
            "diff_low": None if arm == reference or math.isnan(diff.low) else diff.low,
            "diff_high": None if arm == reference or math.isnan(diff.high) else diff.high,
            "questions_per_iteration": costs.get("questions"), "sampled_per_iteration": costs.get("sampled"),
            "trained_per_iteration": costs.get("trained"), "seconds_per_iteration": costs.get("seconds"),
            **{key: costs.get(key) for key in CREDIT_KEYS},
        })
    return table


def table_markdown(table: list[dict], title: str, level: float = 0.95) -> str:
    """The comparison table in markdown: points of accuracy, tokens in thousands."""
    reference = table[0]["arm"]

    def points(x: float | None, sign: bool = False) -> str:
        return "" if x is None else f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"

    def number(x: float | None, form: str) -> str:
        return "" if x is None else format(x, form)

    final = "" if table[0]["last"] == 1 else f" (final: the mean of each run's last {table[0]['last']} evaluations)"
    caption = (f"**{title}**: held-out greedy accuracy in points{final}, mean ± sd over {table[0]['seeds']} seeds; "
               f"Δ is the paired difference in gain to `{reference}` with its {100 * level:.0f}% Student-t "
               f"interval over seeds.")
    header = (f"| arm | final | gain | min gain | Δ gain vs {reference} [{100 * level:.0f}% CI] "
              f"| questions / it | sampled k tok / it | trained k tok / it | stage s / it | blame on first wrong "
              f"| blame on correct | A of correct |")
    lines = [caption, "", header, "|" + " --- |" * 12]
    for r in table:
        diff = "" if r["diff_mean"] is None else (
            f"{points(r['diff_mean'], True)}" + ("" if r["diff_low"] is None else
                                                 f" [{points(r['diff_low'], True)}, {points(r['diff_high'], True)}]"))
        kilo = [number(None if r[k] is None else r[k] / 1000, ".1f")
                for k in ("sampled_per_iteration", "trained_per_iteration")]
        lines.append(
            f"| {r['arm']} | {points(r['final_mean'])} ± {points(r['final_std'])} "
            f"| {points(r['gain_mean'], True)} ± {points(r['gain_std'])} | {points(r['gain_min'], True)} | {diff} "
            f"| {number(r['questions_per_iteration'], '.1f')} | {kilo[0]} | {kilo[1]} "
            f"| {number(r['seconds_per_iteration'], '.2f')} "
            f"| {number(r['credit_first_wrong'], '.3f')} | {number(r['credit_correct'], '.3f')} "
            f"| {number(r['credit_correct_advantage'], '+.3f')} |")
    return "\n".join(lines)


PLOTS = {"iteration": "iteration", "sampled_tokens": "sampled tokens (cumulative)",
         "seconds": "stage seconds (cumulative)"}
"""x axes of the comparison plots: compare.parquet column -> label."""


def plot_comparison(rows: list[dict], arms: list[str], folder: Path, title: str) -> list[Path]:
    """One PNG per x axis: per arm the mean accuracy over seeds as a line, the seeds' min-max as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for x_key, x_label in PLOTS.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for arm in arms:
            evaluated = [r for r in rows if r["arm"] == arm and r["accuracy"] is not None]
            checkpoints = sorted({r["iteration"] for r in evaluated})
            xs, means, lows, highs = [], [], [], []
            for c in checkpoints:
                at = [r for r in evaluated if r["iteration"] == c]
                xs.append(sum(r[x_key] for r in at) / len(at))
                accuracy = [r["accuracy"] for r in at]
                means.append(sum(accuracy) / len(accuracy))
                lows.append(min(accuracy))
                highs.append(max(accuracy))
            (line,) = ax.plot(xs, means, marker="o", markersize=3, label=arm)
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        ax.set_xlabel(x_label)
        ax.set_ylabel("held-out greedy accuracy")
        ax.set_title(f"{title}: mean over seeds, band = min-max")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = folder / f"accuracy_vs_{x_key}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Report:
    """What `comparison_report` wrote."""

    table: list[dict]
    """`compare_table` rows."""
    markdown: str
    """The table as markdown, with the plots' paths."""
    paths: list[Path]
    """compare.parquet, compare.md and the plots."""


def comparison_report(comparison: ComparisonConfig, folder: Path, runs: list[ArmRun]) -> Report:
    """Write compare.parquet, compare.md and the plots into the comparison's folder."""
    arms = [a.label for a in comparison.arms]
    rows = compare_rows(runs)
    parquet = write_compare_parquet(folder, rows)
    table = compare_table(rows, arms)
    title = comparison.description or comparison.name
    plots = plot_comparison(rows, arms, folder, comparison.name)
    markdown = "\n".join([f"# {comparison.name}", "", table_markdown(table, title), "",
                          *(f"- `{p}`" for p in [parquet, *plots])])
    md = folder / "compare.md"
    tmp = md.with_name(".compare.md.tmp")
    tmp.write_text(markdown + "\n")
    tmp.replace(md)
    return Report(table, markdown, [parquet, md, *plots])
