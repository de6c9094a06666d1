"""The command line: user errors are one `spo: error:` line and exit status 2, before any work starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def spo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, check=False, timeout=120)


USER_ERRORS = [
    (["run", "--preset", "tiny", "--set", "sample.temperature=-1"], "sample.temperature = -1.0: expected > 0"),
    (["run", "--preset", "tiny", "--set", "train.whitten=batch"], "no field 'whitten'"),
    (["run", "--preset", "tiny", "--set", "partition.method=none"], "partition.method = 'none' cuts nothing"),
    (["run", "--preset", "nonexistent"], "unknown preset 'nonexistent'; choose one of"),
    (["run"], "choose a preset with --preset NAME (one of ['gsm8k-qwen05b-instruct-chain', 'gsm8k-rho1b-chain'"),
    (["run", "--preset", "gsm8k-rho1b-chain"], ("model.path = 'realtreetune/rho-1b-sft-GSM8K' is not a local folder "
                                                "and HF_HUB_OFFLINE=1 forbids downloading it")),
    (["compare", "nonexistent"], "unknown comparison 'nonexistent'"),
    (["compare", "tiny-lr", "--arms", "grpo-lr1e-4,grpo"], "comparison 'tiny-lr' has no arm 'grpo'; its arms:"),
    (["run", "--run", "/nonexistent/run", "--more", "2"], "--more continues an existing run"),
    (["run", "--preset", "tiny", "--set", "model.path=/nonexistent"],
     "model.path = '/nonexistent': no such folder, and not a Hugging Face hub id"),
    (["run", "--preset", "tiny", "--set", "task.data=/nope.jsonl"],
     "--set: task.data = '/nope.jsonl' is set, but task.name = 'arith' never reads it"),
]
# Every case through `spo`'s own entry point in one child process (a child per case cost 5 s of imports each):
# exit status and stderr per case, as JSON lines on stdout.
CASES_CHILD = """
import contextlib, io, json, sys
from flows.cli import main
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = main(args)
        except SystemExit as exit:
            status = exit.code
    print(json.dumps([status, err.getvalue(), [m for m in ("torch", "transformers", "prefect") if m in sys.modules]]))
"""


@pytest.fixture(scope="module")
def user_errors(tmp_path_factory):
    """(exit status, stderr) of each of USER_ERRORS, and the Prefect home folder that must stay empty."""
    home = tmp_path_factory.mktemp("prefect-home")
    result = subprocess.run([sys.executable, "-c", CASES_CHILD, json.dumps([args for args, _ in USER_ERRORS])],
                            cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()], home


@pytest.mark.slow  # a `spo` child process
@pytest.mark.parametrize("case", range(len(USER_ERRORS)), ids=[message[:30] for _, message in USER_ERRORS])
def test_user_errors_are_one_line_before_any_work(user_errors, case):
    results, home = user_errors
    status, stderr, heavy = results[case]
    message = USER_ERRORS[case][1]
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spo: error: ") and message in lines[0], stderr
    assert not list(home.iterdir()), "Prefect started (its home folder was written)"
    assert heavy == [], f"imported before the error (seconds, not the well under 2 s a check takes): {heavy}"


@pytest.mark.parametrize("package, override, message", [
    ("vllm", "model.engine=vllm", "model.engine = 'vllm', but vllm is not installed"),
    ("tensorboard", "log.tensorboard=true", "log.tensorboard = true, but tensorboard is not installed"),
    ("wandb", "log.wandb=true", "log.wandb = true, but wandb is not installed"),
])
def test_preflight_refuses_an_optional_part_that_is_missing(monkeypatch, package, override, message):
    # stands in for a machine without the package (this test venv has it): find_spec answers "not installed"
    import importlib.util

    from spo.config import ConfigError
    from stages.runtime.preflight import preflight
    from stages.runtime.run_dir import load_preset

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ConfigError, match=message):
        preflight(load_preset("tiny").with_overrides([override]))


def test_preflight_names_a_missing_data_folder(tmp_path):
    from spo.config import ConfigError
    from stages.runtime.preflight import preflight
    from stages.runtime.run_dir import load_preset

    cfg = load_preset("tiny").with_overrides(["task.name=gsm8k", "task.options={}", f"task.data={tmp_path}"])
    with pytest.raises(ConfigError, match=f"task 'gsm8k' .*{tmp_path}/train.jsonl: no such file"):
        preflight(cfg)


@pytest.mark.slow  # `spo` child processes
def test_debug_shows_the_traceback():
    result = spo("run", "--preset", "tiny", "--set", "sample.temperature=-1", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.slow  # `spo` child processes
def test_disk_use_outside_the_run_stays_flat(tmp_path):
    """Prefect's database and cached results of `spo run` live in the run folder: a longer run adds
    nothing under PREFECT_HOME (docs/architecture.md#caching). On the way, the console of a run shows Prefect's
    per-run INFO lines only with --verbose (docs/architecture.md#console)."""
    from tests.helpers import SMALL

    home, run = tmp_path / "prefect_home", tmp_path / "run"
    sets = [a for s in SMALL for a in ("--set", s)]

    def size() -> tuple[int, int]:
        files = [p for p in home.rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)

    first = spo("run", "--preset", "tiny", "--run", str(run), *sets, "--set", "iterations=1",
                env={"PREFECT_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert first.returncode == 0, first.stderr[-3000:]
    assert "iteration 0 | rollout reward" in first.stderr and "Finished in state" not in first.stderr, first.stderr
    after_one = size()
    longer = spo("run", "--run", str(run), "--set", "iterations=3", "--verbose",
                 env={"PREFECT_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "Task run 'train-2' - Finished in state Completed()" in longer.stderr, longer.stderr[-3000:]
    assert size() == after_one, "Prefect wrote outside the run folder"
    assert (run / ".prefect" / "prefect.db").is_file() and list((run / ".prefect-results").iterdir())


def test_a_bad_dask_address_is_named():
    from spo.config import ConfigError
    from stages.runtime.run_dir import load_preset

    with pytest.raises(ConfigError, match="launch.dask_scheduler = 'localhost:8786': expected a Dask address"):
        load_preset("tiny").with_overrides(["launch.dask_scheduler=localhost:8786"])


@pytest.fixture
def no_work(monkeypatch):
    """A command whose checks all pass stops at its first piece of work (creating the run) instead of running:
    a check that fails to fire fails the test in seconds, not after a demo."""
    import stages.runtime.history

    def started(*args, **kwargs):
        raise AssertionError("the checks passed and work started")

    monkeypatch.setattr(stages.runtime.history, "reopen", started)


@pytest.mark.parametrize("args, message", [
    (["run", "--preset", "tiny", "--set", "model.path=/nonexistent"],
     ("model.path = '/nonexistent': no such folder, and not a Hugging Face hub id; expected a checkpoint folder "
      "on this machine, a hub id 'owner/name'")),
    (["run", "--preset", "tiny", "--set", "model.path=owner/name/more"], "model.path = 'owner/name/more': no such"),
    (["run", "--preset", "tiny", "--set", "task.data=/nope.jsonl"],
     ("--set: task.data = '/nope.jsonl' is set, but task.name = 'arith' never reads it (only task.name in "
      "['gsm8k', 'math500'] does)")),
    (["demo", "--set", "critic.lr=1e-3"],
     ("--set: critic.lr = 0.001 is set, but advantage.method = 'segment' never reads it (only advantage.method in "
      "['gae'] does)")),
    (["run", "--preset", "tiny-grpo", "--set", "partition.interval=1"],
     "--set: partition.interval = 1 is set, but partition.method = 'none' never reads it"),
])
def test_bad_input_is_one_line_naming_the_field_before_any_work(no_work, capsys, tmp_path, args, message):
    from flows.cli import main

    assert main([*args, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spo: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_a_field_set_on_an_existing_run_is_checked_against_its_choices(no_work, capsys, tmp_path):
    from flows.cli import main
    from stages.runtime.run_dir import create_run, load_preset

    run = create_run(tmp_path / "run", load_preset("tiny"))
    assert main(["run", "--run", str(run.root), "--set", "task.data=/nope.jsonl"]) == 2
    assert "task.data = '/nope.jsonl' is set, but task.name = 'arith' never reads it" in capsys.readouterr().err


class Exec(Exception):
    """Raised instead of `os.execv`: what `spo server` would have become."""


@pytest.mark.parametrize("host, auth, refused", [
    ("0.0.0.0", None, True), ("10.1.2.3", None, True), ("0.0.0.0", "admin:s3cret", False),
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
])
def test_server_refuses_a_network_host_without_basic_auth(monkeypatch, capsys, host, auth, refused):
    import os

    from flows.cli import main

    def execv(path, command):
        raise Exec(command)

    monkeypatch.setattr(os, "execv", execv)
    if auth is None:
        monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    else:
        monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", auth)
    if refused:
        assert main(["server", "--host", host, "--port", "4999"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"spo: error: --host {host}: serves the Prefect API and UI "
                                                       f"to the network without a password"), err
        assert "set PREFECT_SERVER_API_AUTH_STRING='user:password' for the server and PREFECT_API_AUTH_STRING" in err
    else:
        with pytest.raises(Exec) as started:
            main(["server", "--host", host, "--port", "4999"])
        assert started.value.args[0][-4:] == ["--host", host, "--port", "4999"]
        assert ("PREFECT_API_AUTH_STRING" in capsys.readouterr().out) == (auth is not None)
