"""Final-answer extraction and equivalence for GSM8K, MATH-500 and the arithmetic demo task.

`marked_answer` (GSM8K, arith) and `math_answer` (MATH) pull the final answer out of a response, each task
calling its own (spo/tasks/, the one registry of tasks); `gsm8k_equal` compares GSM8K
numbers; `math_equal` compares LaTeX answers: string equality after normalisation, then exact numbers,
then structure (tuples, intervals, sets, `\\pm`, unions, matrices, equations) and sympy for the scalars.
Every sympy step runs under a time limit: SIGALRM in the main thread, otherwise a `SympyWorker` child
process that is killed when it overruns. A parse failure or a timeout means "not equal", never an error.
sympy (with `spo.latex_sympy`) is imported by the comparisons that use it, so building a task (the config
checks its options) does without it; `math_equal` imports it before its time limit starts.
"""

import functools
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from spo.math_normalize import answer_parts, normalize_answer, split_top_level
from spo.time_limit import SympyWorker, call_with_time_limit

ANSWER_MARKER = "####"


@functools.cache
def _sympy_failures() -> tuple[type[BaseException], ...]:
    """What a malformed or unusual answer may raise inside sympy; all of it means "cannot show equal"."""
    import sympy

    from spo.latex_sympy import LatexParseError

    return (LatexParseError, sympy.SympifyError, TypeError, ValueError, ArithmeticError,
            RecursionError, NotImplementedError, AttributeError, IndexError)  # fmt: skip


def extract_boxed(text: str) -> str | None:
    """Return the content of the last complete `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`), else None.

    >>> extract_boxed("so $\\\\boxed{\\\\frac{1}{2}}$ and finally \\\\boxed{\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)}.")
    '\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)'
    >>> extract_boxed("\\\\boxed 5."), extract_boxed("\\\\boxed{12"), extract_boxed("no box")
    ('5', None, None)
    """
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)(?![a-zA-Z])\s*", text))):
        start = match.end()
        if text[start : start + 1] != "{":
            bare = re.match(r"[^\s$]+", text[start:])
            if bare:
                return bare.group(0).rstrip(".")
            continue
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                return text[start + 1 : end]
    return None


def marked_answer(text: str) -> str | None:
    """The first line after the last `####`, stripped (GSM8K and arith format), or None when there is none.

    >>> marked_answer("48/2 = 24\\n#### 72"), marked_answer("A: 18")
    ('72', None)
    """
    if ANSWER_MARKER not in text:
        return None
    lines = text.rsplit(ANSWER_MARKER, 1)[1].strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def math_answer(text: str) -> str | None:
    """MATH extraction by priority: boxed, `final answer is $...$`, `The answer is ...`, last number.

    >>> math_answer("So $\\\\boxed{5}$."), math_answer("The final answer is $x=5$. I hope it is correct")
    ('5', 'x=5')
    """
    boxed = extract_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    final = re.findall(r"final answer is:?\s*\$+([^$]+)\$", text)
    if final:
        return final[-1].strip()
    if "he answer is" in text:
        lines = text.rsplit("he answer is", 1)[1].strip().splitlines()
        candidate = lines[0].strip(" :$.") if lines else ""
        if candidate:
            return candidate
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+", text)
    return numbers[-1].rstrip(",") if numbers else None


def _gsm8k_number(text: str) -> Decimal | None:
    """`1,000`, `$18`, `18.`, `18.0` as an exact Decimal; None when not a plain number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def gsm8k_equal(pred: str, gold: str) -> bool:
    """True when a GSM8K prediction equals the gold number (separators, `$` and a trailing `.0` ignored).

    >>> [gsm8k_equal(p, "18") for p in ["18", "$18", "18.0", "18.", "18.5", "eighteen"]]
    [True, True, True, True, False, False]
    >>> gsm8k_equal("1,000", "1000")
    True
    """
    pred_number, gold_number = _gsm8k_number(pred), _gsm8k_number(gold)
    if pred_number is not None and gold_number is not None:
        return pred_number == gold_number
    return pred.strip().replace(",", "").lower() == gold.strip().replace(",", "").lower()


def _exact_number(answer: str) -> Fraction | None:
    """A normalised plain number (`-12`, `0.15`, `\\frac{3}{4}`, `-\\frac{35}{9}`) as a Fraction, else None."""
    if re.fullmatch(r"-?\d+(\.\d+)?", answer):
        return Fraction(answer)
    fraction = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", answer)
    if fraction and int(fraction.group(3)) != 0:
        value = Fraction(int(fraction.group(2)), int(fraction.group(3)))
        return -value if fraction.group(1) else value
    return None


def math_equal(
    pred: str | None, gold: str, timeout: float = 5.0, worker: "SympyWorker | None" = None
) -> bool:
    """True when a predicted LaTeX answer is mathematically equal to the gold answer.

    Args:
        pred: the extracted answer (None counts as wrong).
        gold: the reference answer, e.g. MATH-500's `answer` field.
        timeout: seconds allowed for the structural and sympy comparison of this pair.
        worker: the child process that runs the comparison; None runs it here under SIGALRM in the main
            thread, or in a one-shot worker (about a second to start) from any other thread.

    >>> math_equal("\\\\dfrac{1}{2}", "0.5"), math_equal("\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)", "(3,\\\\pi/2)")
    (True, True)
    >>> math_equal("(3,4)", "(3,4]"), math_equal("x=5", "5"), math_equal("\\\\frac{\\\\sqrt{2}}{2}", "1/\\\\sqrt{2}")
    (False, True, True)
    >>> math_equal("50\\\\%", "50"), math_equal("50\\\\%", "0.5"), math_equal("5\\\\%", "0.5")
    (True, True, False)
    """
    if pred is None:
        return False
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if pred_norm == gold_norm:
        return True
    pred_number, gold_number = _exact_number(pred_norm), _exact_number(gold_norm)
    if pred_number is not None and gold_number is not None:
        return not _percent_readings(pred, pred_number).isdisjoint(_percent_readings(gold, gold_number))
    import spo.latex_sympy  # noqa: F401 (sympy loads here, once, never inside the comparison's time limit)

    try:
        return call_with_time_limit(normalized_equal, (pred_norm, gold_norm), timeout, worker)
    except TimeoutError:
        return False


def math_verify_equal(
    pred: str | None, gold: str, timeout: float = 5.0, worker: "SympyWorker | None" = None
) -> bool:
    """math-verify's verdict (Hugging Face's `math_verify.parse` and `verify`, what TRL's accuracy reward
    uses) on an extracted answer, under this project's time limit: math-verify's own timeouts use SIGALRM
    and refuse to run outside the main thread, so they are off and `call_with_time_limit` bounds the call.
    Needs the `math` extra; arguments as `math_equal`'s.

    >>> math_verify_equal("50\\%", "0.5"), math_verify_equal("1{,}000", "1000"), math_verify_equal("(3,4)", "(3,4]")
    (True, True, False)
    """
    if pred is None:
        return False
    try:
        return call_with_time_limit(_math_verify, (pred, gold), timeout, worker)
    except TimeoutError:
        return False


def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    gold_parsed, pred_parsed = (parse(f"${answer}$", parsing_timeout=None) for answer in (gold, pred))
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


MATH_CHECKERS: dict[str, Callable[..., bool]] = {"sympy": math_equal, "math-verify": math_verify_equal}
"""LaTeX answer checkers by name (`task.options.checker` of MATH-style tasks): this project's normaliser and
sympy, or math-verify. `benchmarks/graders.py` measures both on the MATH-500 references and a labelled
table of answer pairs (docs/design.md#grading)."""


def _percent_readings(answer: str, number: Fraction) -> set[Fraction]:
    """The values an exact number may stand for: `50\\%` is 50 (MATH's answers drop the sign) or 1/2."""
    return {number, number / 100} if "%" in answer else {number}


def normalized_equal(pred: str, gold: str) -> bool:
    """Compare two normalised answers by structure, then as sympy scalars (call under a time limit).

    >>> normalized_equal("1+\\\\sqrt{19},1-\\\\sqrt{19}", "1\\\\pm\\\\sqrt{19}"), normalized_equal("Evelyn", "Navin")
    (True, False)
    """
    if pred == gold:
        return True
    if _is_word(pred) or _is_word(gold):
        return pred.lower() == gold.lower()
    pred_sides, gold_sides = split_top_level(pred, "="), split_top_level(gold, "=")
    if len(pred_sides) > 1 or len(gold_sides) > 1:
        return _equations_equal(pred_sides, gold_sides)
    pred_kind, pred_items = answer_parts(pred)
    gold_kind, gold_items = answer_parts(gold)
    if pred_kind == "scalar" and gold_kind == "scalar":
        return _scalars_equal(pred, gold)
    if {pred_kind, gold_kind} <= {"set", "list"}:
        return _unordered_equal(pred_items, gold_items)
    if pred_kind == gold_kind:  # tuples, vectors, matrices, intervals and unions: in order
        return len(pred_items) == len(gold_items) and all(map(normalized_equal, pred_items, gold_items))
    return False


def _is_word(answer: str) -> bool:
    """A plain word (`Evelyn`, `east`): compared as text, never as a product of single-letter symbols."""
    return re.fullmatch(r"[a-zA-Z]{3,}", answer) is not None


def _unordered_equal(pred_items: list[str], gold_items: list[str]) -> bool:
    """Each predicted item matches a distinct gold item (greedy; answer lists are short)."""
    if len(pred_items) != len(gold_items):
        return False
    unmatched = list(gold_items)
    for item in pred_items:
        match = next((gold for gold in unmatched if normalized_equal(item, gold)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return True


def _equations_equal(pred_sides: list[str], gold_sides: list[str]) -> bool:
    """`x=5` vs `5` compares right-hand sides; two equations are equal if (lhs - rhs) are proportional."""
    if len(pred_sides) > 2 or len(gold_sides) > 2:
        return False
    if len(pred_sides) == 1 or len(gold_sides) == 1:
        equation, other = (pred_sides, gold_sides[0]) if len(pred_sides) == 2 else (gold_sides, pred_sides[0])
        return _is_variable(equation[0]) and normalized_equal(equation[1], other)
    if pred_sides[0] == gold_sides[0] and _is_variable(pred_sides[0]):
        return normalized_equal(pred_sides[1], gold_sides[1])
    import sympy

    from spo.latex_sympy import latex_to_sympy

    try:
        pred_zero = latex_to_sympy(pred_sides[0]) - latex_to_sympy(pred_sides[1])
        gold_zero = latex_to_sympy(gold_sides[0]) - latex_to_sympy(gold_sides[1])
        if gold_zero == 0:
            return pred_zero == 0
        ratio = sympy.simplify(pred_zero / gold_zero)
        return bool(ratio.is_number and ratio != 0 and ratio.is_finite)
    except _sympy_failures():
        return False


def _is_variable(text: str) -> bool:
    return re.fullmatch(r"[a-zA-Z](_\{?\w+\}?)?|\\[a-zA-Z]+", text) is not None


def _scalars_equal(pred: str, gold: str) -> bool:
    """Parse both with `latex_to_sympy` and compare them with `expressions_equal`."""
    from spo.latex_sympy import expressions_equal, latex_to_sympy

    try:
        return expressions_equal(latex_to_sympy(pred), latex_to_sympy(gold))
    except _sympy_failures():
        return False
