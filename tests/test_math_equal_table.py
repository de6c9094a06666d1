"""The labelled answer pairs (`data/grading/answer_pairs.jsonl`): each LaTeX checker's verdicts, pinned.

Each row is (pred, gold, the verdict a MATH grader should give, kind). The project's checker (`sympy`, the
default) must give every labelled verdict, in both argument orders, except the misses listed here; so must
math-verify. A checker that gets better or worse on any pair fails here, and the lists say what each misses
(`benchmarks/checkers.py` prints the same comparison with timings).
"""

import json
from pathlib import Path

import pytest

from spo.grading import MATH_CHECKERS, math_equal

PAIRS = [json.loads(line) for line in
         (Path(__file__).resolve().parents[1] / "data" / "grading" / "answer_pairs.jsonl").read_text().splitlines()]
MISSES = {
    "sympy": {
        ("1e3", "1000"),  # scientific notation is not read
        ("\\begin{pmatrix} 1 & 0 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix}"),  # a row is a column
    },
    "math-verify": {
        ("1e3", "1000"),
        ("(-7, 16, 5)", "\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}"),  # a tuple is not a column vector
        ("\\sqrt{2}", "1.41421356"), ("2\\pi", "6.283185"),  # rounds to 6 digits: an approximation is "equal"
        ("(15,-29)", "15,-29"),  # a point equals a list of two answers
        ("x+y=5", "5"),  # any equation's right side is the answer
        ("1\\,000", "1000"),  # a thin space as thousands separator
        ("7.5\\%", "7.5"),  # a percentage is only its decimal
    },
}
"""The pairs each checker grades against its label."""


def test_the_table_covers_what_graders_trip_on():
    kinds = {p["kind"] for p in PAIRS}
    assert len(PAIRS) >= 200 and {"thousands", "percent", "unit", "interval/set", "matrix", "degree", "text",
                                  "mixed number"} <= kinds
    assert sum(p["equal"] for p in PAIRS) >= 80 and sum(not p["equal"] for p in PAIRS) >= 80


@pytest.mark.parametrize("checker", sorted(MATH_CHECKERS))
def test_each_checker_misses_exactly_its_listed_pairs(checker):
    check = MATH_CHECKERS[checker]
    wrong = {(p["pred"], p["gold"]) for p in PAIRS if check(p["pred"], p["gold"]) != p["equal"]}
    assert wrong == MISSES[checker]


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p['kind']}:{p['pred']}|{p['gold']}")
def test_the_default_checker_is_symmetric(pair):
    assert math_equal(pair["pred"], pair["gold"]) == math_equal(pair["gold"], pair["pred"])
