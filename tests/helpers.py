"""What several test modules share: tiny configs, a `spo` child process, a local Prefect server, and
functions that run a plan of stages and compare runs byte for byte, and `spo` in this process (`run_spo`).

`prefect_server(home)` starts `spo server` on a free 127.0.0.1 port with its own PREFECT_HOME, waits
(bounded) until its API answers, yields the API address and the environment that points a child process
at it, and stops it with SIGTERM (kill on timeout). Its log goes to `home/server.log`, which failures print.
"""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from stages.runtime import registry
from stages.runtime.checksums import combined_hash
from stages.runtime.history import stage_status
from stages.runtime.lock import lock_path
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
SPO_CLI = [sys.executable, "-m", "flows.cli"]


@dataclass(frozen=True)
class Server:
    api: str
    """The API address, e.g. http://127.0.0.1:PORT/api (the UI is served at the same host and port)."""
    env: dict[str, str]
    """The environment for a child process that talks to this server."""
    logs: list[Path]
    """Log files whose tails a failure shows; a test appends the logs of the processes it starts."""
    process: subprocess.Popen
    """The server process (stopped when the `prefect_server` block ends)."""


def run_spo(*args: str) -> tuple[int, str, str]:
    """`spo ARGS` in this process: (exit status, stdout, stderr)."""
    from flows.cli import main as spo

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = spo(list(args))
    return status, out.getvalue(), err.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def log_tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs if p.exists())


def wait_for(check, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TimeoutException:  # a server slowed by a loaded machine: ask again until the deadline
            result = None
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log_tails(logs)}")


def status_code(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


@contextmanager
def prefect_server(home: Path, **env: str) -> Iterator[Server]:
    """`spo server` on a free port with PREFECT_HOME `home`; `env` adds variables for its children."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", **env}
    logs = [home / "server.log"]
    home.mkdir(parents=True, exist_ok=True)
    with logs[0].open("w") as log:
        process = subprocess.Popen([*SPO_CLI, "server", "--port", str(port)], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: status_code(f"{api}/health") == 200, 120, "the Prefect server", logs)
            yield Server(api, env, logs, process)
        finally:
            stop(process)


TINY_OVERRIDES = [
    "name=test", "iterations=1", "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "task.name=coin", "task.options={}", "warmstart.max_steps=6", "warmstart.eval_every=3", "warmstart.eval_questions=16",
    "warmstart.batch_size=16", "sample.questions_per_iteration=4", "sample.samples_per_question=4",
    "sample.max_new_tokens=24", "resample.k=2", "partition.interval=3", "train.episodes_per_iteration=16",
    "train.batch_size=8", "train.micro_batch_size=4", "eval.questions=8", "eval.samples_per_question=2",
]
"""The `tiny` preset shrunk to seconds: a 2-layer model on the `coin` test task, a handful of questions."""

GSM8K = ["task.name=gsm8k", "task.options={}", "model.tiny.tokenizer=bpe", "model.tiny.bpe_vocab_size=300",
         "model.tiny.max_position_embeddings=512", "warmstart.enabled=false", "sample.context_size=400",
         "sample.max_new_tokens=24", "partition.interval=4", "sample.questions_per_iteration=3"]

ARITH = ["task.name=arith", 'task.options={"n_operands": 2, "digits": 2, "n_train": 400, "n_test": 40}']
"""A built-in task: served flow runs are new processes, which do not see tasks registered by conftest."""

SMALL = ["iterations=2", "eval.every=1",
         'task.options={"n_operands": 2, "digits": 1, "n_train": 60, "n_test": 20}',  # a built-in task: children
         *[o for o in TINY_OVERRIDES if not o.startswith(("name=", "iterations=", "task."))]]  # lack conftest's


def comparison_file(folder: Path, name: str, seeds: list[int], arms: list[tuple[str, str, list[str]]]) -> Path:
    """A comparison TOML over SMALL: arms of (label, preset, overrides)."""
    def strings(items):
        return "[" + ", ".join(f"'{s}'" for s in items) + "]"

    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nseeds = {seeds}\nset = {strings(SMALL)}\n' + "".join(
        f'\n[[arms]]\nlabel = "{label}"\npreset = "{preset}"\nset = {strings(overrides)}\n'
        for label, preset, overrides in arms))
    return path


SPO_CHILD = "import sys; sys.path[:0] = ['.', 'tests']; import conftest; from flows.cli import main; sys.exit(main())"
"""`python -c SPO_CHILD ARGS` runs `spo ARGS` in a child process with the `coin` task registered, importing the
project from its working directory."""


def flow_plan(run: RunDir) -> list[tuple[str, int]]:
    """The stages `spo-run` executes, in order (stages/runtime/registry.py)."""
    cfg = run.config()
    return [pair for step in registry.flow_plan(cfg, range(cfg.iterations)) for pair in step]


def run_plan(run: RunDir, redo_from: int | None = None) -> None:
    """Every stage in order, as the flow runs them; with `redo_from` (`spo run --from N`) stale stages of
    iteration N and later are recomputed."""
    for name, i in flow_plan(run):
        function, spec = find_stage(name, run.config())
        function(run.root, i, force=redo_from is not None and i >= redo_from
                 and stage_status(spec, run, i).startswith("stale"))


def assert_tables_match_their_schemas(run: RunDir) -> int:
    """Every Parquet output the run's plan declares exists, reads, and matches its schema; returns how many
    (a check over the plan, not over whatever files happen to be there)."""
    import pyarrow.parquet as pq

    import schemas

    paths = [p for name, i in flow_plan(run) for p in find_stage(name, run.config())[1].writes(run, i)
             if p.suffix == ".parquet"]
    assert paths, "the plan declares no table"
    for path in paths:
        schemas.validate(pq.read_table(path), schemas.schema_for(path), path)
    return len(paths)


def fingerprints(root: Path) -> dict[str, str]:
    """Finished artifact -> content hash (of its files' recorded hashes; a checkpoint's `sha256` is its
    producer's identity, stages/runtime/artifacts.py; a retention tombstone, its identity), outside superseded/."""
    manifests = {str(m.relative_to(root)): json.loads(m.read_text()) for m in root.rglob("*.manifest.json")
                 if "superseded" not in m.parts}
    return {p: combined_hash(m["files"]) if "files" in m else f"removed {m['sha256']}" for p, m in manifests.items()}


def manifest_times(root: Path) -> dict[str, int]:
    return {p: (root / p).stat().st_mtime_ns for p in fingerprints(root)}


def recomputed_stages(root: Path, before: dict[str, int]) -> set[str]:
    """`<stage>-<iteration>` of every manifest written since `before`."""
    after = manifest_times(root)
    reports = [json.loads((root / p).read_text())["report"] for p, t in after.items() if before.get(p) != t]
    return {f"{r['stage']}-{r['iteration']}" for r in reports}


def assert_equal_to(reference: RunDir, run: RunDir, temporaries: bool = False) -> None:
    """The same finished artifacts, byte for byte, as the undisturbed run (and, unless `temporaries`, no
    temporary file left)."""
    expected, got = fingerprints(reference.root), fingerprints(run.root)
    differing = sorted(p for p in expected.keys() | got.keys() if expected.get(p) != got.get(p))
    assert not differing, f"artifacts differ from the undisturbed run: {differing}"
    assert temporaries or not list(run.root.rglob("*.tmp*")), list(run.root.rglob("*.tmp*"))
    assert not lock_path(run.root).exists()
