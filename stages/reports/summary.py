"""Per-iteration summary of a run, read from the stage manifests, and its plot."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from stages.runtime.artifacts import manifest_path
from stages.runtime.run_dir import RunDir

COLUMNS = ("iteration", "reward_mean", "train_accuracy", "eval_greedy", "eval_sample", "mc_continuations",
           "sampled_tokens", "shared_prefix_tokens", "trained_tokens", "credit_first_wrong", "loss", "seconds")
CREDIT_KEYS = {"credit_first_wrong": "credit/negative_share_first_wrong",
               "credit_correct": "credit/negative_share_correct",
               "credit_correct_advantage": "credit/correct_advantage_mean",
               "credit_first_wrong_trained": "credit/first_wrong_trained_share"}
"""Summary columns of the credit probe (stages/credit.py) and the report counters they come from."""


def _report(path: Path) -> dict | None:
    mpath = manifest_path(path)
    return json.loads(mpath.read_text())["report"] if mpath.is_file() else None


def iteration_reports(run: RunDir, i: int) -> dict[str, dict]:
    """The reports of the finished stages whose outputs are in iteration i's folder, by stage name (the
    evaluation there is checkpoint i's)."""
    found = (_report(p) for p in sorted(run.iteration_dir(i).glob("*.parquet")))
    return {r["stage"]: r for r in found if r is not None}  # a stage's outputs share one report


def iteration_row(run: RunDir, i: int) -> dict:
    """Iteration i's rollout reward and accuracy, cost, and the held-out accuracy of checkpoint i (None when absent)."""
    reports = iteration_reports(run, i)
    counters = {k: v for r in reports.values() for k, v in r["counters"].items()}
    stage_seconds = [r["seconds"] for name, r in reports.items() if name not in ("evaluate", "warmstart")]
    sampled = "rollouts/reward_mean" in counters
    return {
        "iteration": i,
        "reward_mean": counters.get("rollouts/reward_mean"),
        # questions whose groups were sampled: more than the config's under dynamic sampling (its extra draws)
        "questions": counters.get("dynamic/questions", run.config_at(i).sample.questions_per_iteration)
        if sampled else None,
        "train_accuracy": counters.get("rollouts/accuracy"),
        "eval_greedy": counters.get("eval/accuracy_greedy"),
        "eval_sample": counters.get("eval/accuracy_sample"),
        "mc_continuations": counters.get("mc/continuations"),
        "sampled_tokens": sum(r["counters"].get(k, 0) for r in reports.values()
                              for k in ("sample/tokens", "mc/tokens")) or None,  # SPO-tree: one report per depth
        "shared_prefix_tokens": sum(r["counters"].get(k, 0) for r in reports.values()
                                    for k in ("sample/shared_prefix_tokens", "mc/shared_prefix_tokens")) or None,
        "trained_tokens": counters.get("train/tokens"),
        **{column: counters.get(key) for column, key in CREDIT_KEYS.items()},
        "loss": counters.get("loss/total"),
        "seconds": round(sum(stage_seconds), 2) if stage_seconds else None,
    }


def iteration_summary(run: RunDir) -> list[dict]:
    """One row per iteration folder (`iteration_row`)."""
    folder = run.root / "iterations"
    indices = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    return [iteration_row(run, i) for i in indices]


def iteration_line(run: RunDir, i: int, evaluated: int | None = None) -> str:
    """A log line for iteration i, with checkpoint `evaluated`'s held-out accuracy when it has one."""
    row = iteration_row(run, i)
    parts = [f"iteration {i}"]
    if row["reward_mean"] is not None:
        parts.append(f"rollout reward {row['reward_mean']:.3f}, accuracy {row['train_accuracy']:.3f}, "
                     f"{row['sampled_tokens']} tokens sampled, {row['seconds']} s")
    held_out = iteration_row(run, i if evaluated is None else evaluated)
    for key, label in (("eval_greedy", "greedy"), ("eval_sample", "sampled")):
        if held_out[key] is not None:
            parts.append(f"checkpoint {held_out['iteration']} held-out accuracy ({label}) {held_out[key]:.3f}")
    return " | ".join(parts)


def unevaluated_checkpoints(run: RunDir) -> list[int]:
    """Finished checkpoints without a finished evaluation (`iterations/<NNNN>/eval.parquet`), ascending."""
    return [c for c in run.checkpoints() if not manifest_path(run.artifact(c, "eval")).is_file()]


def summary_markdown(rows: list[dict], plot: Path | None = None) -> str:
    """The summary as a markdown table, and `plot` (a PNG) inlined below it as a data URI: the Prefect UI
    shows a markdown artifact's images but has nowhere to serve a file from."""
    def cell(v):
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    if plot is not None:
        lines += ["", f"![held-out accuracy](data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()})"]
    return "\n".join(lines)


def plot_run(run: RunDir, path: Path) -> Path:
    """PNG of held-out accuracy per checkpoint and mean rollout reward per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = iteration_summary(run)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("eval_greedy", "held-out accuracy (greedy)"), ("eval_sample", "held-out accuracy (sampled)"),
                       ("reward_mean", "mean rollout reward")):
        points = [(r["iteration"], r[key]) for r in rows if r[key] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel("iteration (checkpoint i samples iteration i)")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_title(f"{run.config().name}: {run.config().algorithm}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return path


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (a temporary name, then renamed) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
