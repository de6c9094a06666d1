"""The Prefect flow of a comparison: every (arm, seed) as its own run, in its own process.

1. Create the runs (`data/runs/<comparison>/<arm>-s<seed>/`).
2. Reuse what other comparisons under the same root finished with the same stage keys, then
   warm-start one run per group of runs with the same warm-start key and share it with the group
   (stages/reports/compare.py): one warm start per seed, never recomputed, never a different one copied.
3. Run every run that is not finished, each a `spo run` child process reporting to this flow's
   Prefect server, `parallel` at a time, each with `threads` torch threads.
4. Write the report: compare.parquet, compare.md, the plots, and the table as a Prefect artifact.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.interrupts import reclaim
from stages.reports.compare import (
    ArmRun,
    comparison_dir,
    comparison_report,
    create_runs,
    reuse_finished,
    share_warm_start,
    warm_start_finished,
    warm_start_groups,
)
from stages.runtime.registry import unfinished_stages
from stages.runtime.run_dir import REPO_ROOT, load_comparison
from stages.sampling.launch import die_with_parent

CHILDREN: set[subprocess.Popen] = set()
"""The `spo run` processes running now (`stop_children` ends them on an interrupt)."""


def stop_children() -> None:
    """Send SIGTERM to every child run: each stops within seconds, resumable (flows/interrupts.py)."""
    for child in list(CHILDREN):
        child.terminate()


@task(task_run_name="{label}", retries=0)
def run_process(run: str, label: str, api_url: str, threads: int, log: str, until: int | None = None) -> None:
    """`spo run --run RUN` in a child process that reports to `api_url`; its output goes to `log`."""
    command = [sys.executable, "-m", "flows.cli", "run", "--run", run]
    if until is not None:
        command += ["--until", str(until)]
    env = {**os.environ, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": str(threads), "SPO_PROGRESS": "0"}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=die_with_parent)  # noqa: PLW1509 (this thread waits for it)
        CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            CHILDREN.discard(child)
    if code:
        tail = Path(log).read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{label}: `spo run --run {run}` exited with {code}; log {log}:\n" + "\n".join(tail))


def _submit(r: ArmRun, folder: Path, api_url: str, threads: int, until: int | None = None):
    label = f"{r.arm}-s{r.seed}" + ("-warmstart" if until == 0 else "")
    return run_process.submit(str(r.run.root), label, api_url, threads, str(folder / "logs" / f"{label}.log"), until)


@flow(name="spo-compare")
def spo_compare(comparison: str, seeds: list[int] | None = None, threads: int = 2, root: str | None = None,
                arms: list[str] | None = None) -> str:
    """Run (or resume) every run of a comparison under `root` (default data/runs), or of the arms labelled
    `arms` only, and report it; returns the table as markdown."""
    logger = get_run_logger()
    reclaim()  # SIGTERM stops the run as Ctrl-C does (flows/interrupts.py)
    config = load_comparison(comparison)
    if arms:
        config = config.with_arms(arms)
    folder = comparison_dir(config, None if root is None else Path(root))
    runs = create_runs(config, folder, tuple(seeds) if seeds else None)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    reused = {k: v for k, v in reuse_finished(runs, folder.parent).items() if v}
    if reused:
        logger.info("reused finished stages of other comparisons: %s", reused)
    groups = warm_start_groups(runs)
    logger.info("%s: %d runs, %d warm starts", config.name, len(runs), len(groups))
    todo = [g[0] for g in groups if not warm_start_finished(g[0].run)]
    for future in [_submit(r, folder, api_url, threads, until=0) for r in todo]:
        future.result()
    for group in groups:
        share_warm_start(group)
    pending = [r for r in runs if unfinished_stages(r.run)]
    logger.info("%d of %d runs to (re)run", len(pending), len(runs))
    for future in [_submit(r, folder, api_url, threads) for r in pending]:
        future.result()
    report = comparison_report(config, folder, runs)
    key = re.sub(r"[^a-z0-9-]+", "-", config.name.lower())
    create_table_artifact(key=f"compare-{key}", table=report.table, description=config.description or config.name)
    create_markdown_artifact(key=f"compare-{key}-summary", markdown=report.markdown)
    logger.info("report: %s", ", ".join(str(p) for p in report.paths))
    return report.markdown

