"""Reading, writing and keying stage artifacts: the machinery every stage shares.

A stage declares what it reads and writes (`StageSpec`). `execute` then:
1. returns the stored report when every output exists and is intact: a finished stage is history, kept
   whatever code or config made it (docs/architecture.md#history); `force` recomputes it;
2. otherwise computes the stage key from the identities of its inputs (from their manifests, each checked
   against the file: the content hash, or for a folder written behind the flow its producer's key,
   `identity`), the config sections it reads and the run seed, calls the stage body, validates each table
   against `schemas/`, writes it to a temporary name, moves the output it replaces (if any) to
   `superseded/` and renames the new one into place, and writes the manifest last. An artifact without a
   manifest is unfinished and is never read.
Each manifest also records the stage's code fingerprint (stages/runtime/fingerprint.py), the source version and the
package versions, so `spo stage` and `spo inspect` can say what made it. All of this runs under the
run-directory lock (`stages.runtime.lock`), which also makes any temporary file left beside an output by a killed
writer safe to delete.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from spo.config import RunConfig
from stages.runtime import write_behind
from stages.runtime.checksums import ChecksumError, check_records, combined_hash, file_records
from stages.runtime.fingerprint import fingerprint, source_version
from stages.runtime.load_seconds import load_timer
from stages.runtime.lock import run_lock
from stages.runtime.run_dir import ArtifactError, RunDir, package_versions, repair_hint, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    """What a stage did: returned by every stage and stored in its outputs' manifests."""

    stage: str
    iteration: int
    key: str
    rows: dict[str, int]
    seconds: float
    counters: dict[str, float] = field(default_factory=dict)
    cached: bool = False


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads and writes, as functions of the iteration."""

    name: str
    reads: Callable[[RunDir, int], list[Path]]
    """Input paths (Parquet artifacts or checkpoint folders); each must have a manifest."""
    writes: Callable[[RunDir, int], list[Path]]
    """Output paths; `.parquet` ones are tables of the artifact named by the file stem."""
    config: tuple[str, ...]
    """Config sections or dotted fields the stage reads (part of its key)."""
    module: str
    """The module that defines the stage (`__name__` there): its code fingerprint is the stage's
    (stages/runtime/fingerprint.py)."""
    written_behind: Callable[[RunDir, int], list[Path]] = lambda run, i: []
    """Folder outputs the body hands to `StageContext.write_folder`: inside a flow they are written in the
    background (stages/runtime/write_behind.py), so they are identified by this stage's key, not by their bytes."""
    rebuilds: Callable[[RunDir, int], list[Path]] = lambda run, i: []
    """Inputs the body rebuilds itself when retention left only their tombstone (train replays an optimizer
    state it needs, stages/train.py::replayed)."""


@dataclass
class StageContext:
    """Handed to a stage body: the run, the iteration, the config and checked readers."""

    run: RunDir
    iteration: int
    cfg: RunConfig
    spec: StageSpec
    aside: Path | None = None
    """Where outputs this run replaces go once their replacement has landed (`superseded/<stage>-<time>/`)."""
    staged: list[tuple[Path, Path]] = field(default_factory=list)
    """(temporary, final) folders the body filled (`write_folder_atomic(..., staged=ctx.staged)`): renamed into
    place with the tables, after everything else succeeded."""
    folders: dict[Path, Callable[[Path], None]] = field(default_factory=dict)
    """Folder outputs to write after the body (`write_folder`)."""
    unwritten: dict[Path, str] = field(default_factory=dict)
    """Outputs of `written_behind` left unwritten on purpose, and why (`leave_unwritten`)."""

    def read(self, name: str, iteration: int | None = None) -> pa.Table:
        """Read and validate an artifact of this (or another) iteration."""
        path = self.run.artifact(self.iteration if iteration is None else iteration, name)
        return read_table(path)

    def output(self, name: str) -> Path:
        """Where output `name` goes (a checkpoint folder is written there by the body itself)."""
        for path in self.spec.writes(self.run, self.iteration):
            if path.stem == name or path.name == name:
                return path
        raise KeyError(f"stage {self.spec.name!r} declares no output {name!r}")

    def write_folder(self, name: str, write: Callable[[Path], None]) -> None:
        """Have output folder `name` (one of `written_behind`) filled by `write(folder)` once the body returns:
        behind the flow inside one (`write` then runs on another thread, later), else at once."""
        self.folders[self._behind(name)] = write

    def leave_unwritten(self, name: str, why: str) -> None:
        """Give output folder `name` (one of `written_behind`) only a tombstone manifest, like one that retention
        removed: stages key on its identity, and one that needs its bytes gets an error naming `why`."""
        self.unwritten[self._behind(name)] = why

    def _behind(self, name: str) -> Path:
        path = self.output(name)
        if path not in self.spec.written_behind(self.run, self.iteration):
            raise ValueError(f"{name}: not an output of stage {self.spec.name!r} written behind (`written_behind`)")
        return path


StageBody = Callable[[StageContext], tuple[dict[str, pa.Table], dict[str, float]]]


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def read_manifest(path: Path, verify: bool = True, removed_ok: bool = False, full: bool = False) -> dict:
    """The manifest of a finished artifact.

    Args:
        verify: check the files against the manifest's record (size and time; a file that no longer
            fits is re-hashed, stages/runtime/checksums.py).
        full: with `verify`, re-hash every file (`spo verify`).
        removed_ok: accept an artifact that retention removed (its manifest keeps the hash, so keys
            that read it stay computable); anything that needs its bytes must not pass this.
    """
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise ArtifactError(f"{path}: unfinished or missing (no manifest {mpath.name}); {repair_hint(path)}")
    manifest = json.loads(mpath.read_text())
    if "removed" in manifest:
        if removed_ok:
            return manifest
        raise ArtifactError(f"{path}: removed by retention ({manifest['removed']}); a stage that reads it cannot "
                            f"run again (docs/architecture.md#retention)")
    if "files" not in manifest:
        raise ArtifactError(f"{path}: its manifest {mpath.name} has no per-file record (written by an older spo); "
                            f"rerun the stage that makes it with --force")
    if verify:
        try:
            check_records(path, manifest["files"], full=full)
        except ChecksumError as error:
            raise ArtifactError(f"{error}; {repair_hint(path)}") from None
    return manifest


def read_table(path: Path) -> pa.Table:
    """Read a finished Parquet artifact, checking its manifest record, its page checksums and its schema."""
    read_manifest(path)
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as error:  # a flipped byte that kept the file's size and time
        raise ArtifactError(f"{path}: unreadable although its size and time match the manifest ({error}); "
                            f"`spo verify` re-hashes every artifact") from None
    schemas.validate(table, schemas.schema_for(path), path)
    return table


def write_table(path: Path, table: pa.Table, aside: Path | None = None) -> None:
    """Validate against the artifact's schema, write to a temporary name, move the artifact it replaces (if
    any) to `aside`, then rename."""
    tmp = staged_table(path, table)
    supersede([path], aside)
    tmp.replace(path)


def staged_table(path: Path, table: pa.Table) -> Path:
    """Validate `table` against the artifact's schema and write it to a temporary name beside `path`."""
    expected = schemas.schema_for(path)
    schemas.validate(table, expected, path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(expected.metadata), tmp, compression="zstd",
                       write_page_checksum=True)
    except BaseException:  # e.g. a full disk: leave no partial file behind, then fail as before
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def identity(path: Path, verify: bool = True, removed_ok: bool = True) -> str:
    """What a stage key takes from an input: its manifest's hash (the content hash, or for a folder written
    behind its producer's identity, `producer_identity`), also while that folder is still being written."""
    pending = write_behind.pending_identity(path)
    return pending if pending is not None else read_manifest(path, verify=verify, removed_ok=removed_ok)["sha256"]


def producer_identity(key: str, path: Path) -> str:
    """The identity of a folder written behind: its stage's key and its name. Stages are deterministic, so
    the key decides the bytes; the manifest's per-file record still guards them (docs/architecture.md#keys)."""
    return hashlib.sha256(f"{key}\0{path.name}".encode()).hexdigest()


def stage_key(spec: StageSpec, run: RunDir, iteration: int, cfg: RunConfig) -> str:
    """Identities of the inputs (as recorded, after the cheap check) + config sections + seed, hashed. An
    input removed by retention still has its recorded hash. The code is not part of it: it has a fingerprint
    of its own (stages/runtime/fingerprint.py), so new code never makes finished work unfinished."""
    inputs = [identity(p) for p in spec.reads(run, iteration)]
    text = json.dumps([spec.name, iteration, inputs, cfg.section_hash(*spec.config), cfg.seed])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def finished_report(spec: StageSpec, run: RunDir, iteration: int, key: str | None = None) -> StageReport | None:
    """The stored report if every output is finished and intact (and made under `key`, when given)."""
    reports = []
    for path in spec.writes(run, iteration):
        try:
            manifest = read_manifest(path, removed_ok=True)  # removed by retention after it finished
        except ArtifactError:
            return None
        if key is not None and manifest["key"] != key:
            return None
        reports.append(manifest["report"])
    report = StageReport(**reports[0])
    report.cached = True
    return report


def supersede(paths: list[Path], folder: Path | None) -> None:
    """Move existing outputs (and their manifests) into `folder`, keeping them; with no folder there must be
    none."""
    for path in paths:
        if folder is None and (path.exists() or manifest_path(path).exists()):
            raise FileExistsError(f"{path}: exists; a stage replaces outputs only through `execute`")
        for item in (manifest_path(path), path):  # manifest first: interrupted here, the output is unfinished
            if item.exists():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(str(item), folder / item.name)
                log.warning("moved %s to %s", item, folder)


def remove_stale_temporaries(paths: list[Path]) -> None:
    """Delete temporary files and folders a killed writer left beside `paths` (call under the run lock)."""
    for path in paths:
        for pattern in (f".{path.name}.tmp*", f".{manifest_path(path).name}.tmp*"):
            for stale in path.parent.glob(pattern):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
                log.warning("removed %s, left by an interrupted writer", stale)


def execute(spec: StageSpec, run: RunDir, iteration: int, body: StageBody, force: bool = False) -> StageReport:
    """Run a stage unless its outputs are finished (or with `force`; see the module docstring).

    Raises:
        stages.runtime.lock.RunLockedError: another live process writes to the run.
    """
    with run_lock(run.root, f"stage {spec.name} {iteration:04d}"):
        return _execute(spec, run, iteration, body, force)


def _execute(spec: StageSpec, run: RunDir, iteration: int, body: StageBody, force: bool) -> StageReport:
    if not force:
        stored = finished_report(spec, run, iteration)
        if stored is not None:
            log.info("%s %04d: finished, nothing to do", spec.name, iteration)
            return stored
    cfg = run.config_at(iteration)
    key = stage_key(spec, run, iteration, cfg)
    # fail before any work when an input is gone (stage_key has checked the files of the others)
    rebuilt = spec.rebuilds(run, iteration)
    inputs = {str(p.relative_to(run.root)): identity(p, verify=False, removed_ok=p in rebuilt)
              for p in spec.reads(run, iteration)}
    outputs = spec.writes(run, iteration)
    remove_stale_temporaries(outputs)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    aside = run.iteration_dir(iteration) / "superseded" / f"{spec.name}-{stamp}"
    run.iteration_dir(iteration).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = StageContext(run, iteration, cfg, spec, aside)
    with load_timer() as loads:
        tables, counters = body(ctx)
    if loads:
        counters = {**counters, "engine/load_seconds": round(sum(loads), 3)}
    declared = {p.stem for p in outputs if p.suffix == ".parquet"}
    if set(tables) != declared:
        raise RuntimeError(f"stage {spec.name!r} returned tables {sorted(tables)}, declared {sorted(declared)}")
    report = StageReport(spec.name, iteration, key, {n: t.num_rows for n, t in tables.items()},
                         round(time.perf_counter() - start, 3), counters)
    manifest = {"key": key, "inputs": inputs, "config_hash": cfg.section_hash(*spec.config), "seed": cfg.seed,
                "code": fingerprint(spec.module), "source": source_version(), "versions": package_versions(),
                "created": stamp, "report": asdict(report)}
    staged = list(ctx.staged)
    try:
        staged += [(staged_table(path, tables[path.stem]), path) for path in outputs if path.suffix == ".parquet"]
        _land(spec, run, iteration, ctx, staged, manifest)
    except BaseException:  # the outputs it would replace stay where they are
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    log.info("%s %04d: %s in %.1f s %s", spec.name, iteration, report.rows, report.seconds, counters)
    return report


def _land(spec: StageSpec, run: RunDir, iteration: int, ctx: StageContext, staged: list[tuple[Path, Path]],
          manifest: dict) -> None:
    """Put a computed stage's outputs in place, replacing the old ones only now: folders written behind are
    handed to the writer first (in the foreground they land now, and a failure leaves every old output),
    then the staged tables and folders are renamed in, then the manifests are written, last."""
    aside, key, outputs = ctx.aside, manifest["key"], spec.writes(run, iteration)
    behind = spec.written_behind(run, iteration)
    for path in outputs:  # its manifest is written when it lands
        if path in ctx.folders:
            write_behind.submit(path, producer_identity(key, path), ctx.folders[path],
                                functools.partial(write_manifest, path, manifest, producer_identity(key, path)), aside)
    for tmp, path in staged:
        supersede([path], aside)
        tmp.replace(path)
    for path in outputs:  # manifests last: an output without one is unfinished
        if path in ctx.unwritten:
            supersede([path], aside)
            write_json_atomic(manifest_path(path), {"artifact": path.stem, "sha256": producer_identity(key, path),
                                                    "files": {}, **manifest, "removed": ctx.unwritten[path]})
        elif path not in ctx.folders:
            write_manifest(path, manifest, producer_identity(key, path) if path in behind else None)


def write_manifest(path: Path, manifest: dict, identity: str | None = None) -> None:
    """Record the one hash of each file of the finished output `path` (as it is written) in its manifest;
    its identity is the content hash unless given (`producer_identity`)."""
    records = file_records(path)
    write_json_atomic(manifest_path(path), {"artifact": path.stem, "sha256": identity or combined_hash(records),
                                            "files": records, **manifest})


def cache_key(spec: StageSpec, run: RunDir, iteration: int) -> str | None:
    """The stage key (Prefect's cache key), or None while an input is not finished."""
    try:
        return stage_key(spec, run, iteration, run.config_at(iteration))
    except ArtifactError:
        return None


def is_finished(spec: StageSpec, run: RunDir, iteration: int) -> bool:
    """Whether the stage's outputs are finished and intact (under whatever key: history)."""
    return finished_report(spec, run, iteration) is not None
