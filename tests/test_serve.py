"""Scheduled work: the eval flow, `spo run --more`, and a real local Prefect server serving a flow on an interval.

The flow tests run under the shared temporary-server harness; the served-flow test starts its own
`spo server` on a free port with its own PREFECT_HOME, serves with `spo serve`, waits (bounded) for two
scheduled runs to complete, and stops both processes with SIGTERM (kill on timeout).
"""

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

import flows.serve
from flows.cli import main as spo
from flows.serve import Schedule, deployment, serve
from flows.spo_eval import spo_eval
from flows.spo_run import spo_run
from stages.reports.summary import unevaluated_checkpoints
from stages.runtime.artifacts import manifest_path
from stages.runtime.gc import gc
from stages.runtime.lock import lock_path
from stages.runtime.registry import trained_iterations
from stages.runtime.run_dir import create_run
from tests.helpers import ARITH, REPO, SPO_CLI, log_tails, prefect_server, stop, wait_for

pytestmark = pytest.mark.slow  # a Prefect server and served flow runs


def live_manifest_times(root: Path) -> dict[str, int]:
    """Write times of the manifests of artifacts that are still there: retention rewrites the manifest of
    what it removes into a tombstone, which is not a recomputation."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.manifest.json")
            if "removed" not in json.loads(p.read_text())}


@pytest.mark.usefixtures("prefect_harness")
def test_eval_flow_evaluates_the_newest_unevaluated_checkpoint(tmp_path, tiny_config, capsys):
    run = create_run(tmp_path / "run", tiny_config.with_overrides(["iterations=2", "eval.every=100"]))
    spo(["run", "--run", str(run.root), "--more", "2"])  # evaluates checkpoints 0 and 2 only
    assert run.checkpoints() == [0, 1, 2] and unevaluated_checkpoints(run) == [1]
    result = spo_eval(str(run.root))
    assert result["checkpoint"] == 1 and "eval/accuracy_greedy" in result
    assert manifest_path(run.artifact(1, "eval")).is_file()
    assert spo(["eval", str(run.root)]) == 0  # nothing left to evaluate
    assert capsys.readouterr().out.endswith("every checkpoint has an evaluation\n")
    assert not lock_path(run.root).exists()


@pytest.mark.usefixtures("prefect_harness")
def test_more_continues_after_the_trained_iterations_even_after_gc(tmp_path, tiny_config, capsys):
    run = create_run(tmp_path / "run", tiny_config.with_overrides(["iterations=4", "eval.every=100"]))
    spo(["run", "--run", str(run.root), "--more", "2"])
    assert run.checkpoints() == [0, 1, 2] and trained_iterations(run, run.config()) == 2
    assert gc(run.root, keep_last=0).removed == [1]  # 0: reference, 2: newest (and evaluated)
    before = live_manifest_times(run.root)

    spo(["run", "--run", str(run.root), "--more", "1"])  # iteration 2 only: needs checkpoints 2 and 0
    assert run.checkpoints() == [0, 2, 3]
    after = live_manifest_times(run.root)  # nothing that was there is written again (0002-optimizer: retention)
    assert {p: after[p] for p in before if p in after} == {p: t for p, t in before.items() if p in after}
    assert {p for p in after if p.startswith("iterations/0002/")} >= {
        "iterations/0002/rollouts.parquet.manifest.json", "iterations/0002/train_metrics.parquet.manifest.json"}

    rows = spo_run(str(run.root), more=5)  # capped at the 4 configured iterations
    assert run.checkpoints() == [0, 2, 3, 4] and [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]
    assert spo_run(str(run.root), more=1) and run.checkpoints() == [0, 2, 3, 4]  # nothing left: no-op
    capsys.readouterr()
    assert spo(["run", "--run", str(tmp_path / "missing"), "--more", "1"]) == 2
    assert "spo: error: --more continues an existing run" in capsys.readouterr().err


def test_schedules_are_checked_and_serve_needs_a_server(tmp_path, tiny_config, monkeypatch):
    with pytest.raises(ValueError, match="exactly one of cron and interval"):
        Schedule("run", cron="0 * * * *", interval=60)
    with pytest.raises(ValueError, match=r"unknown flow 'train'; choose one of \['eval', 'run'\]"):
        Schedule("train", interval=60)
    with pytest.raises(ValueError, match="takes no `more`"):
        Schedule("eval", interval=60, more=2)
    run = create_run(tmp_path / "run", tiny_config)
    made = deployment(run.root, Schedule("run", cron="0 */4 * * *", more=3))
    assert (made.name, made.entrypoint, made.parameters) == ("run", "flows.spo_run.spo_run",
                                                            {"run": str(run.root.resolve()), "more": 3})
    assert made.schedules[0].schedule.cron == "0 */4 * * *"
    monkeypatch.setattr(flows.serve, "Runner", lambda *args, **kwargs: pytest.fail("served without a server"))
    with temporary_settings(restore_defaults={PREFECT_API_URL}), \
            pytest.raises(ValueError, match="PREFECT_API_URL is not set.*spo server --port 4200"):
        serve(run.root, [Schedule("eval", interval=60)])


def test_serve_errors_are_one_line(tmp_path, tiny_config, capsys):

    run = create_run(tmp_path / "run", tiny_config)
    assert spo(["serve", str(run.root), "--more", "5"]) == 2
    assert capsys.readouterr().err == "spo: error: --more needs a training schedule: --run-cron or --run-interval\n"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert spo(["serve", str(run.root), "--eval-interval", "60"]) == 2
    assert capsys.readouterr().err.startswith("spo: error: PREFECT_API_URL is not set")


def test_a_server_with_basic_auth_refuses_requests_without_its_credentials(tmp_path):
    """`spo server` with PREFECT_SERVER_API_AUTH_STRING, what a --host other than loopback needs
    (flows/server.py): an API request without the credentials, or with wrong ones, is refused (401); with them,
    and through Prefect's own client given PREFECT_API_AUTH_STRING, it is served."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING

    with prefect_server(tmp_path / "prefect_home", PREFECT_SERVER_API_AUTH_STRING="team:s3cret") as server:
        version = f"{server.api}/admin/version"
        assert httpx.get(version, timeout=10).status_code == 401
        assert httpx.get(version, auth=("team", "wrong"), timeout=10).status_code == 401
        assert httpx.get(version, auth=("team", "s3cret"), timeout=10).status_code == 200
        with (temporary_settings({PREFECT_API_URL: server.api, PREFECT_API_AUTH_STRING: "team:s3cret"}),
              get_client(sync_client=True) as client):
            assert client.read_flows() == []  # a new database


def test_a_served_flow_runs_twice_on_its_interval(tmp_path, tiny_config):
    run = create_run(tmp_path / "run", tiny_config.with_overrides([*ARITH, "iterations=2", "eval.every=100"]))
    with prefect_server(tmp_path / "prefect_home", OMP_NUM_THREADS="1", PREFECT_RUNNER_POLL_FREQUENCY="2") as server:
        server.logs.append(tmp_path / "serve.log")
        with server.logs[1].open("w") as serve_log:
            served = subprocess.Popen([*SPO_CLI, "serve", str(run.root), "--run-interval", "5", "--more", "1"],
                                      cwd=REPO, env=server.env, stdout=serve_log, stderr=subprocess.STDOUT)
            try:
                runs = wait_for(lambda: _finished_runs(server.api, 2), 240, "two completed scheduled runs",
                                server.logs)
            finally:
                stop(served)
        deployments = httpx.post(f"{server.api}/deployments/filter", json={}, timeout=10).json()
    assert server.process.returncode is not None and served.returncode is not None
    # SIGTERM stops serving as Ctrl-C does: the schedules paused, one line, 128 + 15 (flows/interrupts.py)
    assert served.returncode == 143, log_tails(server.logs)
    assert server.logs[1].read_text().splitlines()[-1].startswith("spo: interrupted by SIGTERM: stopped serving")
    assert deployments and all(d["paused"] for d in deployments), deployments
    assert all(r["state_type"] == "COMPLETED" for r in runs[:2]), f"{runs}\n{log_tails(server.logs)}"
    assert all(r["auto_scheduled"] and r["deployment_id"] for r in runs[:2]), "not runs made by the schedule"
    assert run.checkpoints() == [0, 1, 2], "each scheduled run trains one more iteration (capped at 2)"
    assert manifest_path(run.artifact(2, "eval")).is_file()
    # the served flow runs, processes of their own, inherit the quiet console: their iteration lines, not
    # Prefect's per-run INFO lines (flows/logs.py)
    served_output = server.logs[1].read_text()
    assert "iteration 1 | rollout reward" in served_output and "Finished in state" not in served_output


def _finished_runs(api: str, wanted: int) -> list[dict] | None:
    """The flow runs that ended, first started first, once `wanted` did or one did not complete."""
    body = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}, "sort": "START_TIME_ASC"}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    runs = [{"state_type": r["state_type"], "auto_scheduled": r["auto_scheduled"],
             "deployment_id": r["deployment_id"], "name": r["name"]} for r in response.json()]
    done = len(runs) >= wanted or any(r["state_type"] != "COMPLETED" for r in runs)
    return runs if done else None
