"""`spo verify DIR`: re-hash every finished artifact and checkpoint of a run against its manifest.

Reads check a file's size and modification time against its record and re-hash only what no longer
fits (stages/checksums.py): a same-size change that kept the time is caught in Parquet by its page
checksums when read, and anywhere by this full pass (docs/architecture.md#keys).
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.checksums import ChecksumError, check_records


def verify_run(root: Path) -> tuple[int, list[str]]:
    """(artifacts checked, one line per artifact whose files differ from its manifest)."""
    checked, problems = 0, []
    for mpath in sorted(Path(root).rglob("*.manifest.json")):
        if "superseded" in mpath.parts or mpath.name.startswith("."):
            continue
        manifest = json.loads(mpath.read_text())
        if "removed" in manifest:
            continue
        path = mpath.with_name(mpath.name.removesuffix(".manifest.json"))
        checked += 1
        if "files" not in manifest:
            problems.append(f"{path}: its manifest has no per-file record (written by an older spo)")
            continue
        try:
            check_records(path, manifest["files"], full=True)
        except ChecksumError as error:
            problems.append(str(error))
    return checked, problems
