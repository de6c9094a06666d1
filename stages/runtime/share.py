"""Sharing a finished stage between runs whose stage keys agree (a comparison's common warm start).

A stage key is a hash of the stage's input content hashes, the config fields it reads and the run seed
(stages/runtime/artifacts.py). Two runs with the same key for a stage, whose outputs were made by the code this
process runs (the same fingerprint, stages/runtime/fingerprint.py), would compute the same outputs, so the outputs
of one can serve the other: they are hard-linked into the other run (artifacts are never modified in
place, only renamed), manifests last. Runs whose keys or fingerprints differ are left alone, so a
different warm start, or one of older code, is never copied silently; `spo fork` links history as it is
(`link_outputs`, stages/runtime/history.py). `spo compare` uses it for the warm
start its arms have in common, and to reuse runs of other comparisons with the same stages (an arm
that two comparisons share is computed once). See docs/architecture.md#sharing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from stages.runtime.artifacts import (
    StageSpec,
    cache_key,
    finished_report,
    is_finished,
    manifest_path,
    remove_stale_temporaries,
)
from stages.runtime.fingerprint import fingerprint
from stages.runtime.lock import run_lock
from stages.runtime.run_dir import RunDir, write_json_atomic

log = logging.getLogger(__name__)


def share_outputs(spec: StageSpec, source: RunDir, target: RunDir, iteration: int) -> bool:
    """Give `target` the finished outputs of `source` for one stage, if the stage's key is the same in both.

    Returns:
        True when `target` now has the stage finished under its key (shared now or before), False when
        the keys differ or `source` has not finished the stage.
    """
    key = cache_key(spec, source, iteration)
    if key is None or key != cache_key(spec, target, iteration):
        return False
    if finished_report(spec, source, iteration, key) is None:
        return False
    made_by = json.loads(manifest_path(spec.writes(source, iteration)[0]).read_text()).get("code")
    if made_by != fingerprint(spec.module):
        return False
    with run_lock(target.root, f"share {spec.name} {iteration:04d}"):
        if finished_report(spec, target, iteration, key) is not None:
            return True
        link_outputs(spec, source, target, iteration)
    log.info("%s %04d: shared from %s (key %s)", spec.name, iteration, source.root, key)
    return True


def link_outputs(spec: StageSpec, source: RunDir, target: RunDir, iteration: int) -> None:
    """Hard-link one finished stage's outputs from `source` into `target`, manifests last (the caller holds
    `target`'s lock; nothing may be there yet)."""
    outputs = spec.writes(target, iteration)
    remove_stale_temporaries(outputs)
    for path in outputs:
        if path.exists() or manifest_path(path).exists():
            raise FileExistsError(f"{path}: exists under another key; run the stage there instead of sharing")
    manifests = [json.loads(manifest_path(src).read_text()) for src in spec.writes(source, iteration)]
    for src, dst, manifest in zip(spec.writes(source, iteration), outputs, manifests):
        if "removed" not in manifest:  # one that retention removed goes over as its tombstone only
            _link(src, dst)
    for dst, manifest in zip(outputs, manifests):  # manifests last
        write_json_atomic(manifest_path(dst), manifest)


def _link(src: Path, dst: Path) -> None:
    """Hard-link a file, or every file of a folder, to a temporary name beside `dst`, then rename it there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if src.is_dir():
        shutil.copytree(src, tmp, copy_function=os.link)
    else:
        os.link(src, tmp)
    os.replace(tmp, dst)


def share_run(source: RunDir, target: RunDir) -> int:
    """Share `source`'s finished stages with `target` in flow order, up to the first whose key differs or
    that `source` has not finished; returns how many stages `target` got."""
    from stages.runtime.registry import flow_plan, run_stages

    cfg = target.config()
    stages, shared = run_stages(cfg), 0
    for step in flow_plan(cfg, range(cfg.iterations)):
        for name, i in step:
            spec = stages[name][1]
            if is_finished(spec, target, i):
                continue
            if not share_outputs(spec, source, target, i):
                return shared
            shared += 1
    return shared
