"""`spo verify DIR`: re-hash every finished artifact and checkpoint of a run against its manifest.

Reads check a file's size and modification time against its record and re-hash only what no longer
fits (stages/runtime/checksums.py): a same-size change that kept the time is caught in Parquet by its page
checksums when read, and anywhere by this full pass (docs/architecture.md#keys).
"""

from __future__ import annotations

from pathlib import Path

from stages.runtime.artifacts import ArtifactError, read_manifest


def verify_run(root: Path) -> tuple[int, list[str]]:
    """(artifacts checked, one line per artifact whose files differ from its manifest); tombstones of
    artifacts that retention removed are skipped."""
    checked, problems = 0, []
    for mpath in sorted(Path(root).rglob("*.manifest.json")):
        if "superseded" in mpath.parts:
            continue
        try:
            manifest = read_manifest(mpath.with_name(mpath.name.removesuffix(".manifest.json")), removed_ok=True,
                                     full=True)
        except ArtifactError as error:
            problems.append(str(error))
            manifest = {}
        checked += "removed" not in manifest
    return checked, problems
