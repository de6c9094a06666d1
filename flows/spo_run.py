"""The Prefect flow of a run: warm start, then iterations of the stage chain, evaluating as configured.

Each stage is one task, cached on the content hashes of its inputs, its config sections and the code
version (`stages.artifacts.cache_key`), so running the flow again skips finished stages and a crashed
run resumes at the first unfinished one. Tasks pass paths, never tables.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stages.registry import ITERATION_STAGES, STAGES
from stages.artifacts import StageReport, cache_key, is_finished
from stages.run_dir import RunDir
from stages.summary import iteration_summary, summary_markdown


def _stage_cache_key(context, parameters) -> str | None:
    _, spec = STAGES[parameters["name"]]
    return cache_key(spec, RunDir(Path(parameters["run"])), parameters["iteration"])


@task(cache_key_fn=_stage_cache_key, persist_result=True, task_run_name="{name}-{iteration}")
def stage_task(name: str, run: str, iteration: int) -> StageReport:
    """Run one stage (a no-op when its outputs are finished under the same inputs)."""
    function, _ = STAGES[name]
    return function(Path(run), iteration)


def run_stage(name: str, run: str, iteration: int) -> StageReport:
    """The stage's task; a cached result is reused only while the stage's outputs are intact on disk."""
    intact = is_finished(STAGES[name][1], RunDir(Path(run)), iteration)
    return stage_task.with_options(refresh_cache=not intact)(name, run, iteration)


@flow(name="spo-run")
def spo_run(run: str, until: int | None = None) -> list[dict]:
    """Run (or resume) the run in folder `run` up to iteration `until` (default: the configured count)."""
    logger = get_run_logger()
    cfg = RunDir(Path(run)).config()
    last = cfg.iterations if until is None else until
    run_stage("warmstart", run, 0)
    first = run_stage("evaluate", run, 0)
    logger.info("checkpoint 0: held-out accuracy %s", first.counters)
    for i in range(last):
        for name in ITERATION_STAGES[cfg.algorithm]:
            report = run_stage(name, run, i)
            if name == "generate":
                logger.info("iteration %d: rollout reward %.3f, accuracy %.3f", i,
                            report.counters["rollouts/reward_mean"], report.counters["rollouts/accuracy"])
        if (i + 1) % cfg.eval.every == 0 or i + 1 == last:
            report = run_stage("evaluate", run, i + 1)
            logger.info("checkpoint %d: held-out accuracy %s", i + 1, report.counters)
    rows = iteration_summary(RunDir(Path(run)))
    create_table_artifact(key="spo-iterations", table=rows, description=f"per-iteration metrics of {run}")
    create_markdown_artifact(key="spo-summary", markdown=f"# {cfg.name}\n\n{summary_markdown(rows)}")
    return rows
