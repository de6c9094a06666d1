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
from hypothesis import settings

# No per-example deadline: a test's wall time says how loaded the machine is, not whether the code is right.
settings.register_profile("spo", deadline=None)
settings.load_profile("spo")

from spo.tasks import Example, Task, register_task
from tests.helpers import TINY_OVERRIDES

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


@pytest.fixture(scope="module")
def rehearsal_cache(tmp_path_factory):
    """The rehearsal checkpoints of one test module, in a folder of its own (built once per module)."""
    from stages.runtime import rehearsal

    folder = tmp_path_factory.mktemp("rehearsal")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rehearsal, "REHEARSAL_DIR", folder)
        yield folder


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server and database for every flow test (about 13 s to start)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_collection_modifyitems(config, items):
    """Modules with slow tests first, the rest after them, each in its own order. pytest-xdist hands out whole
    modules in this order (`--no-loadscope-reorder` in pyproject.toml; by default it would put the modules with
    the most tests first, and so the long modules of one or two tests last), so the minutes-long modules start
    early and the many quick ones fill both workers' ends (docs/testing.md#speeds)."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


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
    from stages.runtime.run_dir import load_preset

    return load_preset("tiny").with_overrides(TINY_OVERRIDES)

