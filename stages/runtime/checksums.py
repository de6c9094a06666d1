"""Content hashes of artifacts, computed once when written and checked cheaply after.

An artifact is a file or a folder of files. Its manifest records, per file, the sha256, the size and
the modification time (ns), and one combined hash over the names and file hashes. Reading it checks
each file's size and time against the record and re-hashes only a file whose record no longer fits;
`spo verify` re-hashes everything. See docs/architecture.md#keys for what each check catches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


class ChecksumError(RuntimeError):
    """An artifact's files differ from their record (corrupted, changed, missing or added)."""


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_files(path: Path) -> dict[str, Path]:
    """Relative name -> file of an artifact: the file itself, or every file under a folder."""
    if path.is_dir():
        return {str(p.relative_to(path)): p for p in sorted(path.rglob("*")) if p.is_file()}
    return {path.name: path}


def file_records(path: Path) -> dict[str, dict]:
    """Name -> {sha256, size, mtime_ns} of every file of an artifact, hashing each once."""
    records = {}
    for name, file in artifact_files(path).items():
        stat = file.stat()
        records[name] = {"sha256": file_sha256(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return records


def combined_hash(records: dict[str, dict]) -> str:
    """The artifact's hash: sha256 over its sorted file names and their hashes."""
    digest = hashlib.sha256()
    for name in sorted(records):
        digest.update(f"{name}\0{records[name]['sha256']}\n".encode())
    return digest.hexdigest()


def content_hash(path: Path) -> str:
    """The artifact's hash from its bytes (every file re-hashed)."""
    return combined_hash(file_records(path))


def check_records(path: Path, records: dict[str, dict], full: bool = False) -> None:
    """Raise `ChecksumError` unless the artifact's files are those recorded.

    A file whose size and modification time match its record is taken as unchanged (no read); any
    other is re-hashed. `full` re-hashes every file.
    """
    files = artifact_files(path) if path.exists() else {}
    missing, extra = sorted(set(records) - set(files)), sorted(set(files) - set(records))
    if missing or extra:
        raise ChecksumError(f"{path}: files differ from its manifest (missing {missing}, not listed {extra})")
    for name, record in records.items():
        stat = files[name].stat()
        if not full and (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
            continue
        actual = file_sha256(files[name])
        if actual != record["sha256"]:
            raise ChecksumError(f"{path}: content hash {actual[:12]} of {name} differs from its manifest's "
                                f"{record['sha256'][:12]}: the file is corrupted or was changed by hand")
