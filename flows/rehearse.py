"""`spo rehearse PRESET`: a GPU preset's dress rehearsal, run through the same flow as `spo run`.

The preset runs on a random-weight checkpoint of its model family (its real architecture at a chosen depth,
its real tokenizer, chat template and stop rule), shrunk to the CI shape unless asked for its full shape
(stages/runtime/rehearsal.py). Printed: the shrink table before any work, then per stage the seconds, peak
resident memory and tokens, and what the random weights could not exercise (stages/reports/rehearsal.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flows.processes import prefect_api
from flows.spo_run import spo_run
from stages.reports.rehearsal import MemoryTrace, cost_table, shrink_table, stage_costs, unexercised
from stages.runtime.history import reopen
from stages.runtime.lock import run_lock
from stages.runtime.preflight import preflight
from stages.runtime.rehearsal import Rehearsal, rehearsal_checkpoint
from stages.runtime.run_dir import RunDir


def rehearse(rehearsal: Rehearsal, root: Path, echo: Callable[[str], None] = print) -> RunDir:
    """Run `rehearsal` in the run folder `root` (created, or resumed as `spo run` resumes it) and `echo` its
    tables; returns the run."""
    echo(shrink_table(rehearsal))
    start = time.perf_counter()
    folder, built = rehearsal_checkpoint(rehearsal)
    echo(f"checkpoint: {folder} ({f'built in {time.perf_counter() - start:.1f} s' if built else 'cached'})")
    preflight(rehearsal.cfg)  # the checkpoint as any model folder, the task's data, the engine
    with run_lock(root, "spo rehearse"):
        run = reopen(root, rehearsal.cfg)
    with prefect_api(run.root), MemoryTrace() as trace:  # the Prefect server starts first: not traced
        start = time.perf_counter()
        spo_run(str(run.root))
        wall = time.perf_counter() - start
    echo(cost_table(stage_costs(run, trace), trace, wall))
    found = unexercised(run)
    echo("not exercised by the random weights:" if found else "not exercised by the random weights: nothing found")
    for line in found:
        echo(f"  {line}")
    return run
