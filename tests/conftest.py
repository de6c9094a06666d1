"""Shared test setup: offline, quiet Prefect and Hugging Face, two CPU threads."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("SPO_PROGRESS", "0")

from pathlib import Path

import pytest

from spo.tasks import Example, Task, register_task

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine OpenMP spin-waits make them crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only benchmark data beside the checkout (beside the checkout, data/README.md)."""
    if not SHARED_DATA.is_dir():  # a failure, not a skip: every checkout of this project has it beside it
        pytest.fail(f"{SHARED_DATA} is missing: the GSM8K / MATH-500 copies live beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server and database for every flow test (about 13 s to start)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


TINY_OVERRIDES = [
    "name=test", "iterations=1", "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "task.name=coin", "task.options={}", "warmstart.max_steps=6", "warmstart.eval_every=3", "warmstart.eval_questions=16",
    "warmstart.batch_size=16", "sample.questions_per_iteration=4", "sample.samples_per_question=4",
    "sample.max_new_tokens=24", "resample.k=2", "partition.interval=3", "train.episodes_per_iteration=16",
    "train.batch_size=8", "train.micro_batch_size=4", "eval.questions=8", "eval.samples_per_question=2",
]
"""The `tiny` preset shrunk to seconds: a 2-layer model on the `coin` test task, a handful of questions."""


class CoinTask(Task):
    """A test-only task that a barely trained tiny model gets right about half the time, so rewards,
    values and advantages vary (arith would give all-zero rewards at this size): a response is
    correct when it contains the digit 1. Registered the way a user adds a task."""

    name = "coin"

    def load_examples(self, split: str) -> list[Example]:
        return [Example(f"coin/{split}/{i}", str(i), "1", " 1. #### 1") for i in range(40 if split == "train" else 16)]

    def prompt(self, example: Example) -> str:
        return f"Q: {example.question}= A:"

    def target(self, example: Example) -> str:
        return example.solution

    def extract_answer(self, response: str) -> str | None:
        return "1" if "1" in response else "0"

    def answers_equal(self, pred: str, gold: str) -> bool:
        return pred == gold


register_task("coin", CoinTask)


@pytest.fixture
def tiny_config():
    from stages.run_dir import load_preset

    return load_preset("tiny").with_overrides(TINY_OVERRIDES)


SPO_CHILD = "import sys; sys.path[:0] = ['.', 'tests']; import conftest; from flows.cli import main; sys.exit(main())"
"""`python -c SPO_CHILD ARGS` runs `spo ARGS` in a child process with the `coin` task registered, importing the
project from its working directory."""
