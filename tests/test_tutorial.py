"""docs/tutorial.md, run as written: every code block in order, in a temporary copy of the repository.

The conventions (the tutorial states them too): ```bash blocks run in `bash -euo pipefail`, ```python blocks
in `python -` from the repository root; ```LANG file=PATH blocks are written to PATH; a ```text block checks
the output of the block before it, line by line and in order, `...` matching anything; ```bash no-test
blocks are skipped. `spo` is this checkout's command line (`python -m flows.cli`); PREFECT_API_URL is
unset, so each flow starts its own temporary Prefect server, as it does for a reader.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
RUNNABLE = ("bash", "python")
MAX_NO_TEST = 3
"""Blocks the test cannot run (a server that runs until stopped, the clean-up of a checkout): kept few."""
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", ".prefect",
                                    ".pytest_cache", ".ruff_cache", "runs", "rehearsal", "mywork")


@dataclass(frozen=True)
class Block:
    language: str
    options: tuple[str, ...]
    body: str
    line: int
    """Line of the opening fence in docs/tutorial.md."""

    @property
    def file(self) -> str | None:
        return next((o.removeprefix("file=") for o in self.options if o.startswith("file=")), None)

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and not self.options


def tutorial_blocks(text: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        language, *options = match.group(1).split() or [""]
        blocks.append(Block(language, tuple(options), match.group(2), text.count("\n", 0, match.start()) + 1))
    return blocks


def expectation_problems(expected: str, output: str) -> list[str]:
    """The lines of `expected` not found in `output` in order (each a full line, `...` matching anything).

    >>> expectation_problems("a ... c\\n...\\nlast", "x\\na b c\\ny\\nlast")
    []
    >>> expectation_problems("last\\na ... c", "a b c\\nlast")
    ["'a ... c'"]
    """
    lines, at, problems = output.splitlines(), 0, []
    for want in (w.rstrip() for w in expected.splitlines() if w.strip()):
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        found = next((i for i in range(at, len(lines)) if pattern.fullmatch(lines[i].rstrip())), None)
        if found is None:
            problems.append(repr(want))
        else:
            at = found + 1
    return problems


def test_tutorial_blocks_follow_the_conventions() -> None:
    """Every block is runnable, a file, an expected output right after a runnable block, or marked no-test."""
    blocks = tutorial_blocks(TUTORIAL.read_text())
    assert sum(b.runs for b in blocks) >= 10, "the tutorial should run its own commands"
    for before, block in zip([None, *blocks], blocks, strict=False):
        where = f"docs/tutorial.md:{block.line}: ```{block.language} {' '.join(block.options)}"
        if block.language == "text":
            assert before is not None and before.runs, f"{where}: an expected output follows a block that runs"
        elif block.file is not None:
            assert block.options == (f"file={block.file}",) and block.file, f"{where}: expected file=PATH only"
        else:
            assert block.language in RUNNABLE and block.options in ((), ("no-test",)), \
                f"{where}: expected ```bash, ```python, ```text, ```LANG file=PATH or ```bash no-test"
    no_test = [b.line for b in blocks if b.options == ("no-test",)]
    assert len(no_test) <= MAX_NO_TEST, f"{len(no_test)} no-test blocks (lines {no_test}), at most {MAX_NO_TEST}"


@pytest.mark.slow
def test_tutorial_runs(tmp_path: Path) -> None:
    """Every block of the tutorial, in order, at its tiny size (about 2-4 minutes on 2 cores)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=NOT_COPIED)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "spo").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flows.cli "$@"\n')
    (bin_dir / "spo").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]),
               PYTHONPATH=str(repo), PREFECT_HOME=str(tmp_path / "prefect_home"), SPO_PROGRESS="0",
               PYTHONUNBUFFERED="1")  # stdout and stderr interleave as printed
    output = ""
    for block in tutorial_blocks(TUTORIAL.read_text()):
        where = f"docs/tutorial.md:{block.line}"
        if block.file is not None:
            path = repo / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.body)
        elif block.language == "text":
            problems = expectation_problems(block.body, output)
            assert not problems, f"{where}: expected lines not printed: {problems}\n--- output:\n{output[-6000:]}"
        elif block.runs:
            command = ["bash", "-euo", "pipefail", "-c", block.body] if block.language == "bash" else \
                [sys.executable, "-"]
            result = subprocess.run(command, input=None if block.language == "bash" else block.body, cwd=repo,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=600, check=False)
            output = result.stdout
            assert result.returncode == 0, \
                f"{where}: exit status {result.returncode}\n--- block:\n{block.body}\n--- output:\n{output[-6000:]}"
