"""What a rehearsal runs (its shrink table), what it cost per stage, and what its random-weight model could
not exercise (stages/runtime/rehearsal.py prepares it, flows/rehearse.py runs it).

The cost table reads each stage's report from its manifest (seconds, the `*/tokens` counters) and takes the
peak resident memory from a `MemoryTrace` sampled while the flow ran, inside the stage's window (the
manifest's `created` stamp, taken as the body starts, plus its seconds). The findings are read from the
artifacts: a model with random weights answers nothing right and never stops, so some rules of the pipeline
get no input to act on; each finding says which, with the numbers.
"""

from __future__ import annotations

import datetime
import math
import resource
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Self

import pyarrow.compute as pc

from spo.config import changed_fields
from spo.policy.families import FAMILIES
from stages.runtime.artifacts import manifest_path, read_manifest, read_table
from stages.runtime.registry import find_stage, flow_plan
from stages.runtime.rehearsal import Rehearsal
from stages.runtime.run_dir import RunDir

SAMPLED_TOKENS = ("sample/tokens", "mc/tokens", "eval/tokens")
"""Report counters of the tokens a stage sampled (rollouts and tree levels, MC continuations, evaluations)."""
TRAINED_TOKENS = "train/tokens"
"""Report counter of the response tokens the train stage trained on."""


class MemoryTrace:
    """Resident memory sampled every `interval` seconds in a thread while the `with` block runs.

    With psutil (installed with vLLM or Dask), a sample sums the RSS of this process and of the processes it
    starts inside the block (vLLM's engine core, Dask workers, torchrun ranks); those already running when the
    block starts, such as the run's Prefect server, are left out. Without psutil, a sample is this process's
    high-water mark so far (`resource.getrusage`), so a stage's peak is the process's peak by its end.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        """(time.time(), bytes) pairs."""
        self.label = ""
        """What a sample measures, for the table's header."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory-trace", daemon=True)

    def __enter__(self) -> Self:
        self.label, self._resident = _resident_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), self._resident()))
            if self._stop.wait(self.interval):
                return

    def peak(self, start: float, end: float) -> int | None:
        """The largest sample from `start` to one interval past `end` (a stage shorter than the interval still
        gets the sample after it); None when none was taken then (the stage ran before the trace)."""
        inside = [rss for t, rss in self.samples if start <= t <= end + self.interval]
        return max(inside) if inside else None


def _resident_bytes() -> tuple[str, Callable[[], int]]:
    """(label, a function that measures once): with psutil, the RSS of this process plus that of the processes
    it starts from now on; without, the high-water mark of this process."""
    try:
        import psutil
    except ImportError:
        return ("the high-water mark of this process by the stage's end (psutil is not installed)",
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}

    def resident() -> int:
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            if child.pid not in before:
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:  # it ended between the listing and the reading: no memory
                    pass
        return total

    return "the summed RSS of spo and the processes it started, the Prefect server aside", resident


def shrink_table(rehearsal: Rehearsal) -> str:
    """What the rehearsal runs, then "field: preset value -> rehearsal value" for the model's depth and every
    config field it changed (the run's name aside)."""
    cfg, published = rehearsal.cfg, FAMILIES[rehearsal.family].config["num_hidden_layers"]
    rows = [("model depth (decoder layers)", published, rehearsal.layers)]
    rows += [(name, *values) for name, values in changed_fields(rehearsal.preset, cfg).items() if name != "name"]
    head = (f"rehearsal of {rehearsal.preset.name}: {rehearsal.family} with random weights, {cfg.algorithm}, "
            f"engine {cfg.model.engine}; field: preset value -> rehearsal value")
    return "\n".join([head, *(f"  {name}: {_shown(old)} -> {_shown(new)}" for name, old, new in rows)])


def _shown(value) -> str:
    if isinstance(value, list):  # tree.branching
        return "-".join(map(str, value))
    return '""' if value == "" else str(value)


class StageCost(NamedTuple):
    """One stage of a rehearsal run, as `stage_costs` reads it."""

    stage: str
    iteration: int
    seconds: float
    peak_rss: int | None
    """Bytes (`MemoryTrace.peak`); None when the stage finished before the trace."""
    sampled_tokens: int | None
    """None when the stage reports no `SAMPLED_TOKENS` counter (also `evaluate`, whose report has none)."""
    trained_tokens: int | None


def stage_costs(run: RunDir, trace: MemoryTrace) -> list[StageCost]:
    """Every finished stage of the run's plan, in the order the flow runs them."""
    cfg = run.config()
    costs = []
    for step in flow_plan(cfg, range(cfg.iterations)):
        for name, i in step:
            _, spec = find_stage(name, cfg)
            recorded = [p for p in spec.writes(run, i) if manifest_path(p).is_file()]
            if not recorded:
                continue
            manifest = read_manifest(recorded[0], verify=False, removed_ok=True)
            report, counters = manifest["report"], manifest["report"]["counters"]
            start = datetime.datetime.strptime(manifest["created"], "%Y%m%dT%H%M%S%f").replace(
                tzinfo=datetime.UTC).timestamp()
            sampled = [counters[k] for k in SAMPLED_TOKENS if k in counters]
            costs.append(StageCost(name, i, report["seconds"], trace.peak(start, start + report["seconds"]),
                                   int(sum(sampled)) if sampled else None, counters.get(TRAINED_TOKENS)))
    return costs


def cost_table(costs: list[StageCost], trace: MemoryTrace, wall_seconds: float) -> str:
    """The costs as an aligned text table, with totals and the whole flow's wall time and peak."""
    def mb(value: int | None) -> str:
        return "earlier" if value is None else f"{value / 2**20:,.0f}"

    def tokens(values) -> str:
        known = [v for v in values if v is not None]
        return str(sum(known)) if known else "-"

    peak = max((rss for _, rss in trace.samples), default=None)
    rows = [("stage", "iteration", "seconds", "peak RSS MB", "sampled tokens", "trained tokens")]
    rows += [(c.stage, str(c.iteration), f"{c.seconds:.1f}", mb(c.peak_rss), tokens([c.sampled_tokens]),
              tokens([c.trained_tokens])) for c in costs]
    rows.append(("all stages", "", f"{sum(c.seconds for c in costs):.1f}", mb(peak),
                 tokens(c.sampled_tokens for c in costs), tokens(c.trained_tokens for c in costs)))
    rows.append(("flow (wall)", "", f"{wall_seconds:.1f}", "", "", ""))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join([f"stage costs (peak RSS: {trace.label})", *lines])


def _tables(run: RunDir) -> Iterator[tuple[str, object]]:
    """(artifact name, table) of every finished Parquet artifact of the run's iteration folders; the depth
    suffix of `tree_nodes-<d>` is dropped."""
    for path in sorted(run.root.glob("iterations/*/*.parquet")):
        if manifest_path(path).is_file():
            yield path.stem.split("-")[0], read_table(path)


SAMPLE_NAMES = {"rollouts": "rollouts", "mc_samples": "MC continuations", "tree_nodes": "tree nodes",
                "eval": "eval answers"}
"""Artifacts of sampled, graded text (they have `finish_reason` and `reward`), as the findings name them."""


def unexercised(run: RunDir) -> list[str]:
    """What the run's samples gave no input to, one line each with the numbers (empty: nothing found)."""
    cfg = run.config()
    counts = dict.fromkeys(SAMPLE_NAMES, 0)
    answers = 0
    rewards: set[float] = set()
    correct = stopped = rewarded = tokens = likely = episodes = trained = nonzero = trains = steps = 0
    for name, table in _tables(run):
        if name in SAMPLE_NAMES:
            counts[name] += table.num_rows
            stopped += _count(pc.equal(table["finish_reason"], "stop"))
            graded = table["reward"].drop_null()  # a tree's inner nodes have none
            rewarded += len(graded)
            rewards.update(graded.to_pylist())
            if "correct" in table.column_names:  # MC continuations are only rewarded
                answers += table.num_rows
                correct += _count(table["correct"])
        if "logp" in table.column_names:  # the sampled tokens' teacher-forced log-probs: rollouts, tree segments
            logp = pc.list_flatten(table["logp"])
            tokens += len(logp)
            likely += _count(pc.greater_equal(logp, math.log(cfg.partition.tau)))
        if name == "episodes":
            episodes += table.num_rows
            trained += _count(pc.list_flatten(table["mask"]))
            nonzero += _count(pc.not_equal(pc.list_flatten(table["advantages"]), 0))
        if name == "train_metrics":  # one row per optimizer step of a finished train stage
            trains += 1
            steps += table.num_rows
    total = sum(counts.values())
    found = []
    if answers and not correct:
        graded = ", ".join(f"{n} {SAMPLE_NAMES[name]}" for name, n in counts.items() if n and name != "mc_samples")
        found.append(f"no correct answer: 0 of {answers} graded ({graded})")
    if len(rewards) == 1 and not nonzero:
        reward = next(iter(rewards))
        found.append(f"every reward is {reward:g} ({rewarded} rewarded samples), so every value is {reward:g} and every "
                     f"advantage is 0 (the loss has no signal): 0 nonzero advantages over {trained} loss-mask tokens "
                     f"in {episodes} episodes")
    if total and not stopped:
        sampled = ", ".join(f"{n} {SAMPLE_NAMES[name]}" for name, n in counts.items() if n)
        found.append(f"no rollout stopped: 0 of {total} samples ({sampled}) reached the stop token, each ran to its token "
                     f"budget, so the stop rule and the final-EOS rule (advantage.train_on_eos = "
                     f"{str(cfg.advantage.train_on_eos).lower()}) met no EOS")
    if trains and not steps:
        dropped = f"; all {counts['tree_nodes']} tree edges had advantage 0 and were dropped" if (
            counts["tree_nodes"] and not episodes) else ""
        found.append(f"train ran no optimizer step: {episodes} episodes{dropped}, so the update (loss, "
                     f"backward, train.precision = {cfg.train.precision}, AdamW) never ran")
    if tokens and not likely:
        found.append(f"no sampled token had p >= partition.tau = {cfg.partition.tau:g} (0 of {tokens}): every "
                     f"token is a cutpoint and inside the probability mask, so neither excluded any")
    return found


def _count(flags) -> int:
    """True values in a boolean Arrow array (0 for an empty one)."""
    return int(pc.sum(flags).as_py() or 0)
