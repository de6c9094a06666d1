"""The `--set section.field=value` parser: each value parsed by its field's type (JSON for lists and tables).

>>> from spo.config import RunConfig
>>> apply_overrides({"seed": 1, "train": {"lr": 1.0}}, RunConfig, ["train.lr=2e-6", "seed=3"])
{'seed': 3, 'train': {'lr': 2e-06}}
"""

from __future__ import annotations

import json
import typing
from typing import Any


def apply_overrides(data: dict[str, Any], owner: type, assignments: list[str], where: str = "--set") -> dict[str, Any]:
    """`data` (a config as a dict, changed in place and returned) with each `key=value` of `assignments` set;
    an unknown section or field, or a value of the wrong type, is an error naming `where` and the key."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"{where}: {assignment!r} is not key=value")
        *path, leaf = key.strip().split(".")
        node, kind = data, owner
        for part in path:
            if part not in node or not isinstance(node[part], dict):
                raise ValueError(f"{where}: {key!r}: no section {part!r}")
            kind = _field_type(kind, part, where)
            node = node[part]
        if leaf not in node:
            raise ValueError(f"{where}: {key!r}: no field {leaf!r}")
        node[leaf] = _parse_value(raw.strip(), _field_type(kind, leaf, where), f"{where} {key}")
    return data


def _field_type(owner: type, name: str, where: str) -> Any:
    hints = typing.get_type_hints(owner)
    if name not in hints:
        raise ValueError(f"{where}: {owner.__name__} has no field {name!r}")
    return hints[name]


def _parse_value(raw: str, kind: Any, where: str) -> Any:
    """Parse a command-line value by the field's type (JSON for lists and tables)."""
    if kind is str:
        return raw
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"{where}: expected true or false, got {raw!r}")
        return raw.lower() == "true"
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{where}: cannot parse {raw!r} as {getattr(kind, '__name__', kind)}: {error}")


def assigned_fields(assignments: list[str] | tuple[str, ...]) -> list[str]:
    """The dotted fields that `key=value` assignments set.

    >>> assigned_fields(["train.lr=2e-6", " seed = 3"])
    ['train.lr', 'seed']
    """
    return [a.partition("=")[0].strip() for a in assignments]


def table_fields(table: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted fields that a parsed TOML table sets, down to its leaves (a table-valued field such as
    `task.options` to its own keys).

    >>> table_fields({"seed": 1, "train": {"lr": 1.0}, "task": {"options": {"digits": 3}}})
    ['seed', 'train.lr', 'task.options.digits']
    """
    fields = []
    for key, value in table.items():
        if isinstance(value, dict) and value:
            fields += table_fields(value, f"{prefix}{key}.")
        else:
            fields.append(f"{prefix}{key}")
    return fields
