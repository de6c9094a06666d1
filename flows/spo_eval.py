"""The Prefect flow of a scheduled evaluation: evaluate the newest checkpoint that has no evaluation yet.

A nightly schedule on a training run thus evaluates whatever the last training runs produced, one
checkpoint per flow run, through the same cached `evaluate` task as `spo-run`. The run is locked
while it writes, so it never overlaps a training flow on the same directory.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.spo_run import run_stage
from stages.reports.summary import unevaluated_checkpoints
from stages.runtime.lock import run_lock
from stages.runtime.run_dir import RunDir


@flow(name="spo-eval")
def spo_eval(run: str) -> dict | None:
    """Evaluate the newest checkpoint of `run` without an evaluation; None when every checkpoint has one."""
    logger = get_run_logger()
    with run_lock(Path(run), "flow spo-eval"):
        pending = unevaluated_checkpoints(RunDir(Path(run)))
        if not pending:
            logger.info("%s: every checkpoint has an evaluation; nothing to do", run)
            return None
        report = run_stage("evaluate", run, pending[-1])
    result = {"checkpoint": pending[-1], **report.counters}
    logger.info("checkpoint %d: held-out accuracy %s", pending[-1], report.counters)
    create_markdown_artifact(key="spo-eval", markdown="\n".join(
        [f"# {run}: checkpoint {pending[-1]}", "", *(f"- {k}: {v}" for k, v in result.items())]))
    return result
