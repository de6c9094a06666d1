"""The README stays a few screens, every relative link in the docs lands, and the README's set-up commands
are the ones CI runs. Plain text checks: no imports of the project, well under a second."""

import ast
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 250

FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks or inline code spans, where a `[x](y)` is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'.

    >>> github_anchor("Core API (`spo/`)"), github_anchor("Scheduled runs, locks and retention")
    ('core-api-spo', 'scheduled-runs-locks-and-retention')
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get GitHub's -1, -2, ... suffixes."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = github_anchor(match.group(1))
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """The relative links of `path` that name a missing file or a heading its target lacks."""
    problems = []
    for match in LINK.finditer(prose(path.read_text())):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.relative_to(root)}: {target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.relative_to(root)}: {target}: no heading with anchor #{anchor} in "
                            f"{resolved.relative_to(root)} (has {sorted(anchors(resolved))})")
    return problems


def fenced_blocks(text: str, language: str) -> list[str]:
    return [m.group(0).split("\n", 1)[1].rsplit("\n", 1)[0] for m in FENCE.finditer(text)
            if m.group(0).split("\n", 1)[0].strip("`~ ") == language]


def steps(command: str) -> list[str]:
    """A shell line as its `&&`-steps, each normalised: pip's `-q` and output redirections dropped, grouping
    parentheses, quotes and comments removed, words re-joined with single spaces."""
    out = []
    for step in command.split("&&"):
        words = shlex.split(step.strip().strip("()"), comments=True)
        words = [w for w in words if not (w == "-q" and words[0] == "pip") and not re.fullmatch(r"\d?>.*", w)]
        if words:
            out.append(" ".join(words))
    return out


def ci_steps() -> list[str]:
    """The commands `.ci/run` runs, one per line, set-up lines (set, cd, export) left out."""
    out = []
    for line in (REPO / ".ci" / "run").read_text().splitlines():
        if line.strip() and not line.startswith(("#", "set ", "cd ", "export ", " ")):
            out += steps(line)
    return out


def readme_setup_commands() -> tuple[str, str]:
    """The README's two set-up commands: the demo's (ends with `spo demo`) and the tests' (`pytest`)."""
    commands = [b.strip() for b in fenced_blocks(README.read_text(), "bash") if b.startswith("python3 -m venv")]
    demo = [c for c in commands if c.endswith("spo demo")]
    test = [c for c in commands if c.endswith("python -m pytest -q")]
    assert len(demo) == 1 and len(test) == 1, f"expected one demo and one test set-up command, got {commands}"
    return demo[0], test[0]


def test_readme_is_a_few_screens() -> None:
    lines = len(README.read_text().splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines, expected < {MAX_README_LINES}: move detail to docs/"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_land(path: Path) -> None:
    assert not broken_links(path), "\n".join(broken_links(path))


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other file\n\n## A section, with punctuation!\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-section-with-punctuation) [ok](#page) [web](https://x.org/#y)\n"
                    "`[code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n"
                    "[missing file](nowhere.md) [missing heading](other.md#no-such-section) [here](#nope)\n")
    found = broken_links(page, root=tmp_path)
    assert [p.split(": ")[1] for p in found] == ["nowhere.md", "other.md#no-such-section", "#nope"], found


def test_readme_setup_commands_are_the_ci_commands() -> None:
    demo, test = readme_setup_commands()
    ci = ci_steps()
    # The test command is .ci/run, step for step (pip's -q and the redirection to /dev/null aside).
    assert steps(test) == ci, f"README test command {steps(test)}\n!= .ci/run {ci}"
    # The demo command installs as CI does, without the extras, then runs the demo.
    installs = [re.sub(r" -e \.\[[^\]]*\]", " -e .", s) for s in ci if s.startswith(("python3 -m venv", ". ", "pip install"))]
    assert len(installs) == 4, installs
    assert steps(demo) == [*installs, "spo demo"], f"README demo command {steps(demo)}\n!= {[*installs, 'spo demo']}"


def test_readme_lists_the_commands_of_spo_help() -> None:
    """The README's command list is the synopsis that `spo --help` prints (flows/cli.py's docstring)."""
    synopsis = ast.get_docstring(ast.parse((REPO / "flows" / "cli.py").read_text()))
    expected = [line.strip() for line in synopsis.splitlines() if line.strip().startswith("spo ")]
    listed = [b for b in fenced_blocks(README.read_text(), "") if b.lstrip().startswith("spo run")]
    assert listed and [line.strip() for line in listed[0].splitlines()] == expected
