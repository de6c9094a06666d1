"""How an artifact schema is declared and checked.

Each artifact module declares one `pa.schema` with `artifact_schema`: every field carries `nullable` and
a `doc` in its metadata, and the schema metadata carries the artifact name and version, so the
description survives inside every Parquet file. `validate` compares a table (or a file's schema) with
the declared one and names the file, the columns and the difference.
"""

from __future__ import annotations

import pyarrow as pa

TOKEN_IDS = pa.list_(pa.int32())
"""Token ids are always list<int32>."""
TOKEN_FLOATS = pa.list_(pa.float32())
"""Per-token floats (log-probs, advantages) are always list<float32>."""
TOKEN_FLAGS = pa.list_(pa.bool_())
"""Per-token flags (the probability mask)."""


class SchemaError(ValueError):
    """A table does not match its declared artifact schema."""


def column(name: str, kind: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    """One documented column."""
    return pa.field(name, kind, nullable=nullable, metadata={"doc": doc})


def artifact_schema(name: str, version: int, doc: str, columns: list[pa.Field]) -> pa.Schema:
    """The schema of one artifact, its name, version and description in the metadata."""
    return pa.schema(columns, metadata={"artifact": name, "version": str(version), "doc": doc})


def describe(schema: pa.Schema) -> str:
    """Markdown table of an artifact's columns (used by docs/schemas.md and `spo inspect`)."""
    meta = schema.metadata or {}
    lines = [
        (f"**{meta.get(b'artifact', b'?').decode()}** (version {meta.get(b'version', b'?').decode()}): "
         f"{meta.get(b'doc', b'').decode()}"),
        "",
        "| column | type | nullable | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for f in schema:
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        lines.append(f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} | {doc} |")
    return "\n".join(lines)


def validate(actual: pa.Table | pa.Schema, expected: pa.Schema, path: object) -> None:
    """Raise `SchemaError` listing missing, extra and mistyped columns, and nulls in non-nullable ones.

    Args:
        actual: the table (nulls are checked too) or just a file's schema.
        expected: the declared artifact schema.
        path: the file the table comes from or goes to, named in the error.
    """
    schema = actual.schema if isinstance(actual, pa.Table) else actual
    name = (expected.metadata or {}).get(b"artifact", b"?").decode()
    have = {f.name: f for f in schema}
    want = {f.name: f for f in expected}
    problems = []
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {extra}")
    for n, f in want.items():
        if n in have and not have[n].type.equals(f.type):
            problems.append(f"column {n!r} is {have[n].type}, expected {f.type}")
    if isinstance(actual, pa.Table):
        for n, f in want.items():
            if n in have and not f.nullable and actual.column(n).null_count:
                problems.append(f"column {n!r} has {actual.column(n).null_count} null(s), expected none")
    if problems:
        raise SchemaError(f"{path}: does not match schema {name!r} (schemas/{name}.py): " + "; ".join(problems))

