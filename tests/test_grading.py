"""Tests for spo/grading.py: extraction, GSM8K and MATH equivalence, time limits, and the real MATH-500 data."""

import json
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spo.grading import (
    SympyWorker,
    call_with_time_limit,
    extract_boxed,
    gsm8k_equal,
    marked_answer,
    math_answer,
    math_equal,
)
from spo.tasks import make_task

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$\\boxed{5}$", "5"),
        (
            "\\boxed{\\frac{1}{2}} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        ("nested \\boxed{\\{1,\\{2\\}\\}}", "\\{1,\\{2\\}\\}"),
        ("\\fbox{42}", "42"),
        ("\\boxed 7.", "7"),
        ("\\boxed{3} and a truncated \\boxed{4", "3"),  # the last complete box wins
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Therefore, the final answer is: $\\boxed{\\frac{3}{4}}$. I hope it is correct", "\\frac{3}{4}"),
        ("The final answer is $x=5$. I hope it is correct", "x=5"),
        ("Thus the answer is: $12$.\nMore text 99", "12"),
        ("We get 3 apples and 4 pears, 17.5 in total", "17.5"),
        ("The total is 1,000,", "1,000"),
        ("\\boxed{} but the answer is 6", "6"),  # an empty box is skipped
        ("no digits at all", None),
    ],
)
def test_extract_answer_math500(text: str, expected: str | None) -> None:
    assert math_answer(text) == expected


def test_extract_answer_hash_format() -> None:
    assert marked_answer("48/2 = 24\n#### 72") == "72"
    assert marked_answer("#### 1\n#### 2\nProblem: next") == "2"  # last marker, first line
    assert marked_answer("A: 18") is None
    assert marked_answer("27+82=109. #### ") is None  # a marker with nothing after it
    with pytest.raises(ValueError, match=r"unknown task 'mmlu'; choose one of \[.*'gsm8k', 'math500'\]"):
        make_task("mmlu")  # each task extracts its own answers: one registry of tasks


# ---------------------------------------------------------------- gsm8k_equal


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,000", "1000", True),
        ("1000", "1,000", True),
        ("$18", "18", True),
        ("18.0", "18", True),
        ("18.", "18", True),
        ("18.00", "18", True),
        ("-5", "-5", True),
        ("18.5", "18", False),
        ("17", "18", False),
        ("18 dollars", "18", False),  # the reference compares strings: no unit stripping
        ("", "18", False),
    ],
)
def test_gsm8k_equal(pred: str, gold: str, expected: bool) -> None:
    assert gsm8k_equal(pred, gold) is expected


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_gsm8k_equal_accepts_thousands_separators_and_dollars(n: int) -> None:
    sign = "-" if n < 0 else ""
    assert gsm8k_equal(f"{n:,}", str(n))
    assert gsm8k_equal(f"{sign}${abs(n)}.00", str(n))
    assert not gsm8k_equal(str(n + 1), str(n))


# ---------------------------------------------------------------- math_equal robustness

LATEX_PIECES = ["\\frac", "{", "}", "1", "9", "0", "x", "^", "(", ")", ",", "\\sqrt", "-", "+", "=", "\\pi",
                "i", "!", "\\pm", "[", "]", "\\{", "\\}", ".", "\\text{", "\\infty", "/", " ", "\\cup", "&"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(LATEX_PIECES), max_size=12), st.lists(st.sampled_from(LATEX_PIECES), max_size=12)
)
def test_math_equal_never_raises_and_is_reflexive(pred_pieces: list[str], gold_pieces: list[str]) -> None:
    pred, gold = "".join(pred_pieces), "".join(gold_pieces)
    assert isinstance(math_equal(pred, gold, timeout=2.0), bool)
    assert math_equal(pred, pred, timeout=2.0)


def test_math_equal_none_prediction_is_wrong() -> None:
    assert not math_equal(None, "5")


@pytest.mark.parametrize(
    "pred",
    [
        "2^{10^{10}}",
        "(10^{5})!",
        "9!!",
        "\\binom{10^{9}}{10^{5}}",
        "10^{10^{3}}!",
        "x^{10^{9}}+(x+1)^{10^{9}}",
    ],
)
def test_pathological_answers_are_not_equal_and_bounded(pred: str) -> None:
    started = time.monotonic()
    assert not math_equal(pred, "5", timeout=1.0)
    assert time.monotonic() - started < 5.0


def test_alarm_time_limit_in_main_thread_restores_the_previous_handler() -> None:
    def previous(signum, frame):  # a handler someone else installed
        raise AssertionError("the earlier handler must not fire during the call")

    old = signal.signal(signal.SIGALRM, previous)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="sleep overran its 0.2 s limit"):
            call_with_time_limit(time.sleep, (5,), seconds=0.2)
        assert time.monotonic() - started < 2.0
        assert signal.getsignal(signal.SIGALRM) is previous
    finally:
        signal.signal(signal.SIGALRM, old)


def test_time_limit_works_from_a_worker_thread() -> None:
    # SIGALRM cannot be used off the main thread: a one-shot SympyWorker process runs the call instead
    results: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            call_with_time_limit(time.sleep, (30,), seconds=0.5)
        except TimeoutError as error:
            results["error"] = str(error)
        results["seconds"] = time.monotonic() - started
        results["equal"] = math_equal("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt{2}}")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert "overran" in results["error"]
    assert results["seconds"] < 10.0
    assert results["equal"] is True


def test_sympy_worker_is_reused_and_restarts_after_an_overrun() -> None:
    with SympyWorker() as worker:
        assert math_equal("2x+2", "2(x+1)", worker=worker)
        assert not math_equal("2x+3", "2(x+1)", worker=worker)
        with pytest.raises(TimeoutError):
            worker.call(time.sleep, (30,), seconds=0.3)
        assert math_equal("(x+1)^2", "x^2+2x+1", worker=worker)  # a fresh child after the kill
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            worker.call(divmod, (1, 0), seconds=10.0)  # errors in the child are raised here


# ---------------------------------------------------------------- real MATH-500 data


@pytest.fixture(scope="module")
def math500_rows(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()]


def test_math500_reference_solutions_match_their_answers(math500_rows: list[dict]) -> None:
    misses = [(i, row["answer"]) for i, row in enumerate(math500_rows)
              if not math_equal(math_answer(row["solution"]), row["answer"])]  # fmt: skip
    assert len(math500_rows) == 500
    assert misses == []  # measured: 500 / 500 equal


def _shift_letters(text: str) -> str:
    return "".join(chr((ord(c) - ord("a") + 1) % 26 + ord("a")) if c.islower()
                   else chr((ord(c) - ord("A") + 1) % 26 + ord("A")) if c.isupper() else c for c in text)  # fmt: skip


def perturbed(answer: str) -> list[str]:
    """Variants whose value differs from the answer: first integer + 1, first sign swapped (or a `-`
    prefix), and for a `\\text{}` answer its letters shifted (`east` -> `fbtu`)."""
    text = re.fullmatch(r"\\text\{(.*)\}", answer)
    if text:
        return [f"\\text{{{_shift_letters(text.group(1))}}}"]
    variants = []
    number = re.search(r"\d+", answer)
    if number:
        variants.append(answer[: number.start()] + str(int(number.group()) + 1) + answer[number.end() :])
    sign = re.search(r"(?<!\\)[-+]", answer)
    if sign:
        variants.append(answer[: sign.start()] + {"-": "+", "+": "-"}[sign.group()] + answer[sign.end() :])
    elif answer.strip() != "0":
        variants.append("-" + answer)
    return variants


def test_perturbed_math500_answers_are_graded_wrong(math500_rows: list[dict]) -> None:
    pairs = [(variant, row["answer"]) for row in math500_rows for variant in perturbed(row["answer"])]
    false_positives = [pair for pair in pairs if math_equal(*pair)]
    assert len(pairs) >= 900  # measured: 982 perturbations
    assert false_positives == []  # measured false-positive rate: 0 / 982
