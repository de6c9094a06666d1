"""Where a task's rows come from: local files in four formats, or a Hugging Face hub dataset.

A source is one of
- a folder: `<folder>/<split>.jsonl` (or `.json`, `.parquet`, `.csv`, the first that exists);
- a file or a glob of files (`data/mine/*.parquet`), used for every split; `{split}` in it is replaced by
  the split name (`data/mine/{split}-*.parquet`);
- a mapping {split: file or glob};
- a hub id (`openai/gsm8k`, not a local path), read with `datasets.load_dataset` (the `datasets` extra).
Rows are checked as they are read: every field the task needs is there and is a string, and an error names
the file, the row (the line of a JSON-lines file, the 1-based row of the others) and the field. `columns`
maps a field to the column that holds it when the names differ (`{"question": "problem"}`); `splits` maps
the task's split to the hub dataset's split name (`{"test": "validation"}`).
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from spo.tasks.base import SPLITS, DataPath

FORMATS = (".jsonl", ".json", ".parquet", ".csv")
"""File suffixes a source may have, in the order a folder is searched."""
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""What a hub id looks like (a local path that exists wins)."""


def checked_columns(columns: Mapping[str, str] | None, fields: Sequence[str], task: str) -> dict[str, str]:
    """A task's `columns` option, refused when it names a field the task does not read."""
    for field, column in (columns or {}).items():
        if field not in fields or not isinstance(column, str):
            raise ValueError(f"columns = {dict(columns)!r}: expected {{field: column name}} with fields among "
                             f"{list(fields)} (task {task})")
    return dict(columns or {})


def checked_splits(splits: Mapping[str, str] | None, task: str) -> dict[str, str]:
    """A task's `splits` option, refused when it names a split the task does not have."""
    for split, name in (splits or {}).items():
        if split not in SPLITS or not isinstance(name, str):
            raise ValueError(f"splits = {dict(splits)!r}: expected {{split: the dataset's split name}} with splits "
                             f"among {list(SPLITS)} (task {task})")
    return dict(splits or {})


def read_rows(source: DataPath, split: str, fields: Sequence[str], task: str,
              columns: Mapping[str, str] | None = None, splits: Mapping[str, str] | None = None,
              hub_config: str | None = None) -> tuple[str, list[tuple[int, dict]]]:
    """(where the rows came from, [(row number, row)]) for one split; each row has every field of `fields`
    under that name, with `columns` applied, and its other columns as they are."""
    columns = dict(columns or {})
    wanted = [columns.get(f, f) for f in fields]
    if isinstance(source, Mapping):
        if split not in source:
            raise ValueError(f"{task}: no file for split {split!r} in path mapping (has {sorted(source)})")
        source = source[split]
    text = str(source).replace("{split}", split)
    files = _local_files(Path(text), split)
    if files is None:
        if not HUB_ID.fullmatch(text):
            raise FileNotFoundError(f"{text}: no such file, folder or glob (expected {' or '.join(FORMATS)} "
                                    f"files with fields {wanted}, or a hub id)")
        where = f"hub:{text}/{(splits or {}).get(split, split)}"
        rows = hub_rows(text, hub_config, (splits or {}).get(split, split), task)
        return where, [(n, _renamed(_checked(where, n, row, wanted), columns)) for n, row in rows]
    rows = [(n, row) for file in files for n, row in _file_rows(file, wanted)]
    where = str(files[0]) if len(files) == 1 else f"{text} ({len(files)} files)"
    return where, [(n, _renamed(row, columns)) for n, row in rows]


def _local_files(path: Path, split: str) -> list[Path] | None:
    """The files of a local source, or None when it names nothing local."""
    if path.is_dir():
        for suffix in FORMATS:
            if (path / f"{split}{suffix}").is_file():
                return [path / f"{split}{suffix}"]
        raise FileNotFoundError(f"{path / f'{split}.jsonl'}: no such file (nor {split}.json, .parquet or .csv "
                                f"in {path})")
    if path.is_file():
        return [path]
    if glob.has_magic(str(path)):
        found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).suffix in FORMATS)
        if not found:
            raise FileNotFoundError(f"{path}: the glob matches no {'/'.join(FORMATS)} file")
        return found
    if path.suffix in FORMATS or path.is_absolute() or str(path).startswith("."):
        raise FileNotFoundError(f"{path}: no such file")
    return None


def _file_rows(path: Path, fields: Sequence[str]) -> list[tuple[int, dict]]:
    """(row number, row) of one file, every row checked to have string `fields`."""
    if path.suffix == ".jsonl":
        return read_jsonl(path, fields)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return read_jsonl(path, fields)  # JSON lines under a .json name
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of objects (or JSON lines), got {type(data).__name__}")
        return [(n, _checked(path, n, row, fields)) for n, row in enumerate(data, start=1)]
    table = _read_table(path, fields)
    return [(n, _checked(path, n, row, fields)) for n, row in enumerate(table.to_pylist(), start=1)]


def _read_table(path: Path, fields: Sequence[str]):
    """A Parquet or CSV file as an Arrow table; a missing column is named once, with the columns there are."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        names = pq.read_schema(path).names
    else:
        names = pacsv.open_csv(path).schema.names
    missing = [f for f in fields if f not in names]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (expected {list(fields)}, got {sorted(names)})")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    # CSV: read the task's fields as text (an answer column of digits is still a string answer)
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={f: pa.string() for f in fields}, strings_can_be_null=False))


def _checked(where, number: int, row, fields: Sequence[str]) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where}:{number}: expected an object with fields {list(fields)}, got {type(row).__name__}")
    for field in fields:
        if field not in row:
            raise ValueError(f"{where}:{number}: missing field {field!r} (expected {list(fields)}, got {sorted(row)})")
        if not isinstance(row[field], str):
            raise ValueError(f"{where}:{number}: field {field!r} is {type(row[field]).__name__}, expected a string")
    return row


def read_jsonl(path: Path, fields: Sequence[str]) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line of a JSON-lines file whose rows all have string `fields`.

    Errors name the file, the 1-based line number and the field.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (expected a JSON-lines file with fields {list(fields)})"
        )
    rows = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})"
                ) from None
            rows.append((number, _checked(path, number, row, fields)))
    return rows


def _renamed(row: dict, columns: Mapping[str, str]) -> dict:
    """The row with each task field under its own name (`columns` maps field -> column)."""
    return {**row, **{field: row[column] for field, column in columns.items()}}


def hub_rows(hub_id: str, config: str | None, split: str, task: str) -> list[tuple[int, dict]]:
    """(row number, row) from a Hugging Face hub dataset; needs the optional `datasets` package and network.

    Not exercised here (no hub access on this project's machines); tests use local files.
    """
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"{task}: {hub_id!r} is not a local file, folder or glob, so it is read as a hub id, which "
                          f"needs the `datasets` package (the project's datasets extra); install it or point "
                          f"task.data at local files") from error
    return list(enumerate(datasets.load_dataset(hub_id, config, split=split), start=1))
