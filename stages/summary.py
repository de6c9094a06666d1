"""Per-iteration summary of a run, read from the stage manifests, and its plot."""

from __future__ import annotations

import json
from pathlib import Path

from stages.artifacts import manifest_path
from stages.run_dir import RunDir

COLUMNS = ("iteration", "reward_mean", "train_accuracy", "eval_greedy", "eval_sample", "mc_continuations",
           "sampled_tokens", "loss", "seconds")


def _report(path: Path) -> dict | None:
    mpath = manifest_path(path)
    return json.loads(mpath.read_text())["report"] if mpath.is_file() else None


def iteration_summary(run: RunDir) -> list[dict]:
    """One row per iteration (and per evaluated checkpoint): rewards, accuracies, cost. Missing values are None."""
    rows = []
    folder = run.root / "iterations"
    indices = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    for i in indices:
        reports = {p.stem: _report(p) for p in run.iteration_dir(i).glob("*.parquet")}
        reports = {k: v for k, v in reports.items() if v is not None}
        counters = {k: v for r in reports.values() for k, v in r["counters"].items()}
        stage_seconds = {r["stage"]: r["seconds"] for r in reports.values() if r["stage"] != "evaluate"}
        rows.append({
            "iteration": i,
            "reward_mean": counters.get("rollouts/reward_mean"),
            "train_accuracy": counters.get("rollouts/accuracy"),
            "eval_greedy": counters.get("eval/accuracy_greedy"),
            "eval_sample": counters.get("eval/accuracy_sample"),
            "mc_continuations": counters.get("mc/continuations"),
            "sampled_tokens": (counters.get("sample/tokens") or 0) + (counters.get("mc/tokens") or 0) or None,
            "loss": counters.get("loss/total"),
            "seconds": round(sum(stage_seconds.values()), 2) if stage_seconds else None,
        })
    return rows


def summary_markdown(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    def cell(v):
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
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
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
