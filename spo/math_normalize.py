"""Normalise a LaTeX final answer: a canonical string (MATH `strip_string`-like) and its structure.

The rules follow the DeepSeekMath / Hendrycks MATH `strip_string` normalisation used by the reference
grader (docs/design.md#grading): remove `\\left`/`\\right`, spacing commands, `$`, `\\%`, degrees and unit
text, unify `\\dfrac`/`\\tfrac`/`\\cfrac`, add braces to `\\frac12` and `\\sqrt2`, and turn integer `a/b`
into `\\frac{a}{b}`. A few additions keep MATH-500 gold answers and their usual rewrites equal as strings
(thousands separators, mixed numbers, base subscripts, `x \\in` prefixes, multiple-choice letters).
"""

import re
from fractions import Fraction

# Thin spaces etc.; a backslash before them is a matrix row break (`\\ `), not a spacing command.
_SPACING_COMMANDS = r"(?<!\\)\\[!,;: ]|\\q?quad(?![a-zA-Z])|~"
_UNWRAP_COMMANDS = (
    "text",
    "textbf",
    "textit",
    "mathrm",
    "mathbf",
    "mbox",
    "boldsymbol",
    "mathit",
    "operatorname",
)
_DEGREE_MARKS = ("^{\\circ}", "^\\circ", "\\circ", "°", "\\degree")


def normalize_answer(answer: str) -> str:
    """Return the canonical string form of a LaTeX answer (no spaces, unified fractions, no units).

    Args:
        answer: a final answer as written in a response or a dataset, e.g. `\\dfrac{1}{2}`.

    >>> normalize_answer("\\\\left( 3, \\\\dfrac{\\\\pi}{2} \\\\right)")
    '(3,\\\\frac{\\\\pi}{2})'
    >>> normalize_answer("10,\\\\!080"), normalize_answer("2{,}500{,}000"), normalize_answer("\\\\$18.90")
    ('10080', '2500000', '18.9')
    >>> normalize_answer("1\\\\frac{4}{5}")
    '\\\\frac{9}{5}'
    >>> normalize_answer("5.4 \\\\text{ cents}"), normalize_answer("90^\\\\circ"), normalize_answer("x \\\\in [-2,7]")
    ('5.4', '90', '[-2,7]')
    """
    s = answer.strip().replace("\n", "").replace("{,}", ",")  # `1{,}000`: LaTeX's unspaced thousands comma
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:displaystyle|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = re.sub(_SPACING_COMMANDS, " ", s)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = _remove_trailing_units(s)
    s = _unwrap_commands(s)
    for mark in _DEGREE_MARKS:
        s = s.replace(mark, "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _remove_spaces(s).rstrip(".").strip()
    s = re.sub(r"^[a-zA-Z]\\in(?![a-zA-Z])", "", s)
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = _fix_slash_fraction(s)
    s = _fix_numbers(s)
    s = re.sub(r"^\(([A-Z])\)$", r"\1", s)  # multiple choice "(C)" is the letter C
    return s


def _remove_spaces(s: str) -> str:
    r"""Remove whitespace, except one space between a command and a letter (`\cot x` is not `\cotx`).

    >>> _remove_spaces(r"\frac{\cos x}{\sin  x} + 2 \pi")
    '\\frac{\\cos x}{\\sin x}+2\\pi'
    """

    def keep_one(match: re.Match) -> str:
        after_command = re.search(r"\\[a-zA-Z]+$", s[: match.start()]) is not None
        return " " if after_command and s[match.end() : match.end() + 1].isalpha() else ""

    return re.sub(r"\s+", keep_one, s)


def _remove_trailing_units(s: str) -> str:
    """Drop a `\\text{ unit}` (optionally squared) that follows a non-empty answer: `864 \\mbox{ inches}^2`."""
    unit = r"\\(?:text|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z ]*\}(?:\^\{?\d\}?)?\s*$"
    stripped = re.sub(unit, "", s).strip()
    return stripped if stripped else s


def _unwrap_commands(s: str) -> str:
    """Replace `\\text{abc}` (and `\\mathrm`, `\\mbox`, ...) by its braced content."""
    pattern = r"\\(?:" + "|".join(_UNWRAP_COMMANDS) + r")\s*\{([^{}]*)\}"
    previous = None
    while previous != s:
        previous, s = s, re.sub(pattern, r"\1", s)
    return s


def _fix_fracs(s: str) -> str:
    """Brace single-character `\\frac` arguments: `\\frac12` -> `\\frac{1}{2}`, `\\frac9{19}` -> `\\frac{9}{19}`.

    >>> _fix_fracs("\\\\frac12+\\\\frac{270}7")
    '\\\\frac{1}{2}+\\\\frac{270}{7}'
    """
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i) and not s[i + 5 : i + 6].isalpha():
            out.append("\\frac")
            i += 5
            for _ in range(2):
                argument, i = _take_argument(s, i)
                out.append("{" + argument + "}")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _take_argument(s: str, i: int) -> tuple[str, int]:
    """Read one TeX argument at s[i]: a braced group or a single character; return (content, next index)."""
    if i >= len(s):
        return "", i
    if s[i] != "{":
        if s[i] == "\\":
            match = re.match(r"\\[a-zA-Z]+", s[i:])
            if match:
                return match.group(0), i + len(match.group(0))
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1 : j], j + 1
    return s[i + 1 :], len(s)


def _fix_slash_fraction(s: str) -> str:
    """Turn a whole-answer integer ratio `a/b` into `\\frac{a}{b}` (as the reference does)."""
    match = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    return f"{match.group(1)}\\frac{{{match.group(2)}}}{{{match.group(3)}}}" if match else s


def _fix_numbers(s: str) -> str:
    """Canonicalise a whole-answer number: separators, `.5`, `18.0`, mixed numbers, base subscripts.

    >>> [_fix_numbers(x) for x in ["1,234,567", ".5", "18.00", "137\\\\frac{1}{2}", "4210_{5}", "52_8"]]
    ['1234567', '0.5', '18', '\\\\frac{275}{2}', '4210', '52']
    """
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"^(-?)\.(\d)", r"\g<1>0.\2", s)
    if re.fullmatch(r"-?\d+\.\d*", s):
        s = s.rstrip("0").rstrip(".")
    mixed = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)
    if mixed and int(mixed.group(4)) != 0:
        value = int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4)))
        s = f"{mixed.group(1)}\\frac{{{value.numerator}}}{{{value.denominator}}}"
    base = re.fullmatch(r"([0-9A-F]+)_\{?(\d+)\}?", s)
    return base.group(1) if base else s


def split_top_level(text: str, separator: str) -> list[str]:
    r"""Split on a separator outside any bracket.

    >>> split_top_level("(1,2),\\{3,4\\},5", ",")
    ['(1,2)', '\\{3,4\\}', '5']
    """
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text.startswith("\\{", i) or text[i] in "([{":
            depth += 1
        elif text.startswith("\\}", i) or text[i] in ")]}":
            depth -= 1
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 2 if text[i] == "\\" else 1
    return parts + [text[start:]]


def _encloses(text: str) -> bool:
    """True when the first bracket of `text` closes at its last character (`(3,4]` yes, `(a)(b)` no)."""
    depth = 0
    for i, char in enumerate(text):
        depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        if depth == 0:
            return i == len(text) - 1
    return False


def answer_parts(answer: str) -> tuple[str, list[str]]:
    r"""Split a normalised answer into (kind, items) so that structures are compared item by item.

    Kinds: `scalar` (one item), `list` (bare commas or `\pm`: unordered), `set` (`\{...\}`: unordered),
    `vector` (a tuple or a one-row/column matrix), `matrixRxC`, an interval's brackets such as `(]`
    (so `(3,4)` != `(3,4]`), and `ordered\cup` for a union of intervals.

    >>> answer_parts("(3,4]"), answer_parts("1\\pm\\sqrt{5}"), answer_parts("(a+5)(b+2)")
    (('(]', ['3', '4']), ('list', ['1+\\sqrt{5}', '1-\\sqrt{5}']), ('scalar', ['(a+5)(b+2)']))
    >>> answer_parts("\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}")
    ('matrix2x2', ['-1', '0', '0', '-1'])
    """
    matrix = re.fullmatch(r"\\begin\{[pbv]matrix\}(.*)\\end\{[pbv]matrix\}", answer)
    if matrix:
        rows = [row.split("&") for row in matrix.group(1).split("\\\\")]
        kind = "vector" if min(len(rows), len(rows[0])) == 1 else f"matrix{len(rows)}x{len(rows[0])}"
        return kind, [cell for row in rows for cell in row]
    for union in ("\\cup", "\\cap"):
        if len(split_top_level(answer, union)) > 1:
            return f"ordered{union}", split_top_level(answer, union)
    if answer.startswith("\\{") and answer.endswith("\\}"):
        return "set", expand_plus_minus(split_top_level(answer[2:-2], ","))
    if answer[:1] in "([" and answer[-1:] in ")]" and _encloses(answer):
        parts = split_top_level(answer[1:-1], ",")
        if len(parts) > 1:
            # a column vector written as a tuple matches a pmatrix of the same cells
            return ("vector" if answer[0] + answer[-1] == "()" else answer[0] + answer[-1]), parts
    parts = expand_plus_minus(split_top_level(answer, ","))
    return ("list", parts) if len(parts) > 1 else ("scalar", parts)


def expand_plus_minus(items: list[str]) -> list[str]:
    r"""`1\pm\sqrt{5}` stands for two answers: `1+\sqrt{5}` and `1-\sqrt{5}`."""
    expanded = []
    for item in items:
        if "\\pm" in item or "\\mp" in item:
            expanded.append(item.replace("\\pm", "+").replace("\\mp", "-"))
            expanded.append(item.replace("\\pm", "-").replace("\\mp", "+"))
        else:
            expanded.append(item)
    return expanded
