"""The Prefect flow of a run: warm start, then iterations of the stage chain, evaluating as configured.

Each stage is one task, cached on the identities of its inputs, its config sections and the seed
(`stages.runtime.artifacts.cache_key`). A run is a history (stages/runtime/history.py): running the flow again skips
finished stages whatever code made them, and a crashed or interrupted run resumes at the first unfinished
one; with `from_iteration` every stage from that iteration on that is stale (other inputs, config or code)
is recomputed. Tasks pass paths, never tables.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.interrupts import reclaim
from stages.reports.summary import iteration_line, iteration_summary, plot_run, summary_markdown
from stages.reports.trackers import open_trackers
from stages.runtime.artifacts import StageReport, cache_key, finished_report
from stages.runtime.gc import retain
from stages.runtime.history import history_line, stage_status
from stages.runtime.lock import run_lock
from stages.runtime.registry import find_stage, flow_plan, iteration_range
from stages.runtime.run_dir import RunDir
from stages.runtime.write_behind import write_behind
from stages.sampling.engines import engine_pool


def _stage_cache_key(context, parameters) -> str | None:
    return parameters["key"]


@task(cache_key_fn=_stage_cache_key, persist_result=True, task_run_name="{name}-{iteration}")
def stage_task(name: str, run: str, iteration: int, key: str | None, force: bool = False) -> StageReport:
    """Run one stage (a no-op when its outputs are finished, unless `force`); `key` is its cache key."""
    function, _ = find_stage(name, RunDir(Path(run)).config())
    return function(Path(run), iteration, force=force)


def run_stage(name: str, run: str, iteration: int, redo_stale: bool = False) -> StageReport:
    """The stage's task; a cached result is reused only while the stage's outputs are intact on disk, and
    with `redo_stale` only while the stage is not stale (`stages.runtime.history.stage_status`).

    The stage manifests decide what is finished; Prefect's cache mirrors them (its records are kept in
    the run folder, flows/processes.py; docs/architecture.md#caching).
    """
    root = RunDir(Path(run))
    _, spec = find_stage(name, root.config())
    force = redo_stale and stage_status(spec, root, iteration).startswith("stale")
    finished = not force and finished_report(spec, root, iteration) is not None
    key = cache_key(spec, root, iteration)
    return stage_task.with_options(refresh_cache=not finished)(name, run, iteration, key, force)


@flow(name="spo-run")
def spo_run(run: str, until: int | None = None, more: int | None = None,
            from_iteration: int | None = None) -> list[dict]:
    """Run (or resume) the run in folder `run` up to iteration `until` (default: the configured count).

    With `more` (a scheduled continuation), train `more` iterations after those already trained, never
    past `iterations` of the config; earlier iterations are not revisited. With `from_iteration`, recompute
    every stale stage of that iteration and later ones (`spo run --from N`). The run is locked throughout.
    """
    logger = get_run_logger()
    reclaim()  # SIGTERM stops the run as Ctrl-C does (flows/interrupts.py)
    with (run_lock(Path(run), "flow spo-run"), engine_pool(), write_behind(),  # lands before engines close
          open_trackers(RunDir(Path(run))) as trackers):
        cfg = RunDir(Path(run)).config()
        iterations = iteration_range(RunDir(Path(run)), cfg, until, more)
        if more is not None:
            logger.info("continuing: iterations %s of %d configured", iterations, cfg.iterations)
        if from_iteration is None:
            line = history_line(RunDir(Path(run)))
            if line:
                logger.info(line)
        for step in flow_plan(cfg, iterations):
            redo = from_iteration is not None and step[0][1] >= from_iteration
            for name, i in step:
                run_stage(name, run, i, redo)
            retain(RunDir(Path(run)), cfg.retention)
            i = step[0][1]
            warm_start = step[0][0] == "warmstart"
            logger.info(iteration_line(RunDir(Path(run)), i, evaluated=None if warm_start else i + 1))
            if not warm_start:
                trackers.log_iteration(i)  # folder i: checkpoint i's evaluation and iteration i's stages
        if iterations.stop == cfg.iterations:
            trackers.log_iteration(cfg.iterations)  # the last checkpoint's evaluation
        rows = iteration_summary(RunDir(Path(run)))
        plot = plot_run(RunDir(Path(run)), Path(run) / "accuracy.png")
    create_table_artifact(key="spo-iterations", table=rows, description=f"per-iteration metrics of {run}")
    create_markdown_artifact(key="spo-summary", markdown=f"# {cfg.name}\n\n{summary_markdown(rows, plot)}")
    return rows
