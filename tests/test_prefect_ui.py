"""The Prefect UI as a user sees it: a local Prefect server, a tiny run through it, and the run's artifacts
opened in a real headless browser (Debian's `chromium`, which the README's test command installs).

The UI is a JavaScript application, so what it shows exists only after the browser ran it: chromium's
`--dump-dom` prints the page as rendered (after `--virtual-time-budget` of script time), and the test looks
for the run's own numbers there. `--screenshot` keeps a picture of each page for the failure message and
for docs/prefect-ui-*.png (refreshed with SPO_UPDATE_SCREENSHOTS=1).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from stages.reports.summary import iteration_summary
from stages.runtime.run_dir import create_run
from tests.helpers import ARITH, REPO, SPO_CLI, log_tails, prefect_server

pytestmark = pytest.mark.slow  # a Prefect server and a browser

CHROMIUM = shutil.which("chromium")
DOCS = REPO / "docs"


def browse(url: str, screenshot: Path) -> str:
    """The page at `url` as headless chromium renders it (the DOM after its scripts ran), and a screenshot."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=30000"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    screenshot.with_suffix(".html").write_text(dom)  # beside the screenshot, for a failure's reader
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG"), f"no screenshot of {url}"
    return dom


def shown(value) -> str:
    """A number as the UI (JavaScript) prints it: whole floats without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def artifact(api: str, key: str) -> dict:
    response = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    response.raise_for_status()
    (found,) = response.json()
    return found


def test_the_ui_shows_the_runs_table_and_summary(tmp_path, tiny_config):
    assert CHROMIUM, "chromium is missing: the README's test command installs it (apt-get install chromium)"
    run = create_run(tmp_path / "run", tiny_config.with_overrides([*ARITH, "iterations=2", "eval.every=1"]))
    with prefect_server(tmp_path / "prefect_home", OMP_NUM_THREADS="1") as server:
        done = subprocess.run([*SPO_CLI, "run", "--run", str(run.root)], cwd=REPO, env=server.env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{done.stderr[-4000:]}\n{log_tails(server.logs)}"
        table, summary = artifact(server.api, "spo-iterations"), artifact(server.api, "spo-summary")
        assert table["flow_run_id"] == summary["flow_run_id"]
        ui = server.api.removesuffix("/api")
        pages = {"table": f"{ui}/artifacts/artifact/{table['id']}",
                 "summary": f"{ui}/artifacts/artifact/{summary['id']}",
                 "flow-run": f"{ui}/runs/flow-run/{table['flow_run_id']}"}
        doms = {name: browse(url, tmp_path / f"prefect-ui-{name}.png") for name, url in pages.items()}

    rows = iteration_summary(run)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    stored = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert [r["eval_greedy"] for r in stored] == [r["eval_greedy"] for r in rows]
    shots = "screenshots: " + ", ".join(str(tmp_path / f"prefect-ui-{name}.png") for name in pages)
    # The table page: every iteration's held-out accuracy and sampled tokens as the run's summary has them.
    for r in rows:
        for value in (v for v in (r["eval_greedy"], r["sampled_tokens"]) if v is not None):  # None: a blank cell
            assert f">{shown(value)}<" in doms["table"].replace(" ", ""), f"{value} not on the table page; {shots}"
    # The summary page: the markdown table, rendered (its cells, not the markdown source).
    assert "<table" in doms["summary"] and "| iteration |" not in doms["summary"], shots
    for r in rows:
        assert f">{r['eval_greedy']:.3f}<" in doms["summary"].replace(" ", ""), shots
        if r["sampled_tokens"] is not None:
            assert f">{r['sampled_tokens']}<" in doms["summary"].replace(" ", ""), shots
    # The accuracy plot, inlined in the summary as a data URI, is an image on the page.
    assert re.search(r'<img[^>]*src="data:image/png;base64,', doms["summary"]), shots
    # The flow run's page: completed, the stage graph down to the last train task, the iteration log lines.
    assert "Completed" in doms["flow-run"] and "train-1" in doms["flow-run"], shots
    assert f"iteration 0 | checkpoint 0 held-out accuracy (greedy) {rows[0]['eval_greedy']:.3f}" in doms["flow-run"], shots
    if os.environ.get("SPO_UPDATE_SCREENSHOTS"):
        for name in pages:
            shutil.copyfile(tmp_path / f"prefect-ui-{name}.png", DOCS / f"prefect-ui-{name}.png")


@pytest.fixture(autouse=True)
def _no_browser_crash_dumps(monkeypatch, tmp_path):
    """chromium writes its profile and crash reports under HOME; keep them out of the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
