"""The Prefect flow of a run, end to end on a tiny model: artifacts, caching, stage reruns, resume.

Real parts throughout: a real Prefect flow run (temporary server), real Parquet files, a real tiny
Llama trained on the arith task.
"""

import json
import shutil
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.cli import main as spo
from flows.spo_run import spo_run
from stages.runtime.artifacts import manifest_path
from stages.runtime.registry import iteration_stages
from stages.runtime.run_dir import RunDir, create_run
from tests.helpers import assert_tables_match_their_schemas


def task_states(flow_state, settle: float = 30.0) -> dict[str, str]:
    """The final state of each task run of a flow run. Prefect 3 reports task states to its server as events,
    after the flow returns, so a loaded machine can still show Pending: read again until none is (`settle` s)."""
    deadline = time.monotonic() + settle
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
        states = {run.name: run.state.name for run in runs}
        if not {"Pending", "Running"} & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def manifests(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.manifest.json")}


@pytest.fixture(scope="module")
def finished_run(prefect_harness, tmp_path_factory):
    """One tiny run through one iteration, and the state of its flow run."""
    from stages.runtime.run_dir import load_preset
    from tests.helpers import TINY_OVERRIDES

    run = create_run(tmp_path_factory.mktemp("flow") / "run", load_preset("tiny").with_overrides(TINY_OVERRIDES))
    return run, spo_run(str(run.root), return_state=True)


def test_flow_runs_an_iteration_then_skips_everything(finished_run):
    run, first = finished_run
    assert first.is_completed()
    states = task_states(first)
    expected = {"warmstart-0", "evaluate-0", "evaluate-1", *(f"{s}-0" for s in iteration_stages(run.config()))}
    assert set(states) == expected and set(states.values()) == {"Completed"}

    # every artifact opens with polars and matches its declared schema
    assert_tables_match_their_schemas(run)
    for path in run.root.rglob("*.parquet"):
        assert pl.read_parquet(path).height == pq.read_metadata(path).num_rows
    assert (run.checkpoint(1) / "model.safetensors").is_file() and (run.optimizer_state(1) / "optimizer.pt").is_file()

    before = manifests(run.root)
    second = spo_run(str(run.root), return_state=True)
    assert set(task_states(second).values()) == {"Cached"}
    assert manifests(run.root) == before, "a finished stage was recomputed"
    assert not list(run.root.rglob("superseded"))


def test_rerunning_one_stage_reproduces_its_output(finished_run, tmp_path, capsys):
    run = RunDir(tmp_path / "copy")
    shutil.copytree(finished_run[0].root, run.root)
    for stage in ["generate", "partition", "resample", "advantages", "train"]:
        outputs = [p for p in run.iteration_dir(0).glob("*.parquet")
                   if json.loads(manifest_path(p).read_text())["report"]["stage"] == stage]
        originals = {p.name: pq.read_table(p) for p in outputs}
        spo(["stage", stage, "--run", str(run.root), "--iteration", "0"])
        assert "cached" in capsys.readouterr().out
        spo(["stage", stage, "--run", str(run.root), "--iteration", "0", "--force"])
        assert "computed" in capsys.readouterr().out
        for name, table in originals.items():
            assert pq.read_table(run.iteration_dir(0) / name).equals(table), f"{name} differs after a rerun"
            kept = list((run.iteration_dir(0) / "superseded").rglob(name))
            assert len(kept) == 1 and pq.read_table(kept[0]).equals(table)
    # the retrained checkpoint has the same weights
    from safetensors.torch import load_file

    old = load_file(next((run.iteration_dir(0) / "superseded").rglob("model.safetensors")))
    new = load_file(run.checkpoint(1) / "model.safetensors")
    assert old.keys() == new.keys() and all((old[k] == new[k]).all() for k in old)


def test_a_failed_stage_resumes_without_losing_finished_work(prefect_harness, tmp_path, tiny_config, monkeypatch):
    import stages.resample

    run = create_run(tmp_path / "run", tiny_config)

    def crash(ctx):
        raise RuntimeError("killed in the middle of resample")

    monkeypatch.setattr(stages.resample, "_resample", crash)
    failed = spo_run(str(run.root), return_state=True)
    assert failed.is_failed()
    finished = manifests(run.root)
    assert {Path(p).name for p in finished} >= {"prompts.parquet.manifest.json", "rollouts.parquet.manifest.json",
                                                 "boundaries.parquet.manifest.json"}
    assert not manifest_path(run.artifact(0, "values")).exists()
    assert not list(run.root.rglob("*.tmp*"))

    monkeypatch.undo()
    resumed = spo_run(str(run.root), return_state=True)
    assert resumed.is_completed()
    states = task_states(resumed)
    assert states["generate-0"] == "Cached" and states["resample-0"] == "Completed"
    after = manifests(run.root)
    assert all(after[p] == t for p, t in finished.items()), "a finished artifact was rewritten on resume"


def test_inspect_summarises_the_run_and_an_iteration(finished_run, capsys):
    run, _ = finished_run
    spo(["inspect", str(run.root)])
    overview = capsys.readouterr().out
    assert "checkpoints: [0, 1]" in overview and "| iteration | reward_mean |" in overview
    spo(["inspect", str(run.root), "--iteration", "0", "--stage", "generate"])
    detail = capsys.readouterr().out
    assert "== rollouts.parquet: 16 rows, stage generate" in detail and "examples (‖ marks a boundary)" in detail
    assert "episodes.parquet" not in detail


def test_the_console_shows_prefect_run_lines_only_when_verbose_and_the_api_gets_them_all(finished_run, monkeypatch):
    """Prefect's INFO lines about each flow and task run reach the console only with SPO_VERBOSE=1 (`spo
    --verbose`), the project's own line per iteration always, and the Prefect API every line (flows/logs.py)."""
    import io
    import logging

    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker, PrefectConsoleHandler

    from flows.logs import quiet_console

    run, _ = finished_run
    quiet_console()  # as `spo` does where Prefect configured its logging before it could choose the handler
    console = next(h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler))

    def console_of_a_run(verbose: str):
        monkeypatch.setenv("SPO_VERBOSE", verbose)
        shown = io.StringIO()
        monkeypatch.setattr(console.console, "file", shown)
        state = spo_run(str(run.root), return_state=True)  # every stage cached: a second
        return shown.getvalue(), state

    quiet, state = console_of_a_run("0")
    verbose, _ = console_of_a_run("1")
    assert "iteration 0 | rollout reward" in quiet and "iteration 0 | rollout reward" in verbose
    for line in ("Beginning flow run", "View at http", "Task run 'generate-0' - Finished in state Cached",
                 "Finished in state Completed()"):
        assert line not in quiet, quiet
        assert line in verbose, verbose

    APILogWorker.drain_all(timeout=10)  # logs are sent in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    sent = [log.message for log in logs]
    assert "Finished in state Completed()" in sent and any(m.startswith("iteration 0 | rollout reward") for m in sent)
    assert sum(m.startswith("Finished in state Cached") for m in sent) >= 8  # the task runs' lines, in the API
