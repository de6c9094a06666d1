"""Code identity per stage: a hash of the code a stage runs, for the debugging loop of one stage.

A stage's code is its own module and every project module (under `spo/`, `stages/`, `schemas/`) it imports,
directly or through another, at top level or inside a function. Each file counts by its syntax tree without
docstrings, so an edit to a comment, a docstring or the layout changes no fingerprint. The fingerprint is
recorded in each manifest and compared by `spo stage` and `spo inspect`; it never decides what `spo run`
recomputes (a run is a history, docs/architecture.md#history). `spo fork` and comparisons share a finished
stage between runs only when the fingerprints agree.

>>> "spo.losses" in closure("stages.train"), "spo.losses" in closure("stages.generate")
(True, False)
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spo", "stages", "schemas")
"""The project packages a fingerprint covers; flows/ orchestrates and never decides an artifact's bytes."""


def module_file(name: str) -> Path | None:
    """The source file of project module `name`, or None when it is not a project module."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def _parsed(path: Path) -> tuple[str, tuple[str, ...]]:
    """The docstring-free syntax tree of a file, dumped, and the project modules it imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imported: list[str] = []
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            imported.append(base)
            imported += [f"{base}.{alias.name}" for alias in node.names]  # `from stages import train`
    project = tuple(sorted({m for m in imported if module_file(m) is not None}))
    return ast.dump(tree, annotate_fields=False), project


def closure(module: str) -> set[str]:
    """`module` and the project modules it imports, transitively (a module imports its packages' `__init__`)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]
        todo += _parsed(module_file(name))[1]
    return seen


@functools.cache
def fingerprint(module: str) -> str:
    """The code identity of the stage defined in `module` (e.g. "stages.train"): a short hash over its closure,
    once per process, as a process runs the code it imported."""
    digest = hashlib.sha256()
    for name in sorted(closure(module)):
        digest.update(f"{name}\0{_parsed(module_file(name))[0]}\0".encode())
    return digest.hexdigest()[:16]


@functools.cache
def source_version() -> str:
    """The code identity of the whole project (every module under `spo/`, `stages/`, `schemas/`), as the
    manifests record it beside the stage's own: what `spo inspect` groups iterations by."""
    modules = [".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
               for package in PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))]
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(f"{name}\0{_parsed(module_file(name))[0]}\0".encode())
    return digest.hexdigest()[:16]
