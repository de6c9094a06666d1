"""Table of math_equal cases: (prediction, gold, expected), grouped by the rule each one exercises."""

import pytest

from spo.grading import math_equal

EQUAL = [
    # fractions, decimals, integers
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "\\frac34"),
    ("\\tfrac{14}{3}", "\\frac{14}{3}"),
    ("4\\frac{2}{3}", "\\frac{14}{3}"),  # mixed number: 4 + 2/3 = 14/3
    ("137 \\frac{1}{2}", "275/2"),  # 137 + 1/2 = 275/2
    ("\\frac{6}{4}", "\\frac{3}{2}"),
    ("-\\frac{35}{9}", "\\frac{-35}{9}"),
    ("0.0000672", ".0000672"),
    ("18.0", "18"),
    ("18.", "18"),
    ("1.250", "1.25"),
    ("10,080", "10080"),
    ("10,\\!080", "10080"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("\\frac{9}{100}", "0.09"),
    ("-50", "-50.0"),
    # money, percent, degrees, units
    ("\\$18.90", "18.9"),
    ("\\$32,\\!348", "32348"),
    ("50\\%", "50"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("5.4 \\text{ cents}", "5.4"),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
    ("864 \\mbox{ inches}^2", "864"),
    ("15\\mbox{ cm}^2", "15"),
    # \left/\right, spacing, text answers, multiple choice
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\textbf{(C)}", "\\text{(C)}"),
    ("C", "\\text{(C)}"),
    ("\\text{east}", "East"),
    # radicals, pi, complex numbers
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("11\\sqrt2", "11\\sqrt{2}"),
    ("\\sqrt[3]{8}", "2"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("18+2\\pi", "2\\pi+18"),
    ("\\frac{20000}{\\pi}", "20000/\\pi"),
    ("6 - 5i", "-5i+6"),
    ("1+274i", "274i+1"),
    # algebraic expressions
    ("(x+1)^2", "x^2+2x+1"),
    ("x^5 - x^4 + x^3 - x^2 + x - 1", "(x-1)(x^4+x^2+1)"),
    ("2k+2", "2(k+1)"),
    ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
    ("\\frac{11+9a}{20}", "\\frac{11}{20}+\\frac{9a}{20}"),
    ("(a+5)(b+2)", "ab+2a+5b+10"),
    ("6r^2-4r-24", "2(3r^2-2r-12)"),
    ("p - q", "-q+p"),
    # tuples, intervals, sets, lists, \pm, unions
    ("(6,31,-1)", "\\left(6, 31, -1\\right)"),
    ("(15,-29)", "(15, -29.0)"),
    ("(3,4]", "(3, 4]"),
    ("(-\\infty, 0]", "(-\\infty,0]"),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\pi^2/8, 5\\pi^2/4]"),
    ("1,-2", "-2, 1"),
    ("3, 5, 7", "7,3,5"),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1+\\sqrt5, 1-\\sqrt5"),
    ("(0,9) \\cup (9,36)", "(0, 9)\\cup(9, 36)"),
    ("x \\in [-2,7]", "[-2,7]"),
    # equations
    ("x=5", "5"),
    ("5", "x=5"),
    ("y = 2x + 3", "y=3+2x"),
    ("y = 2x + 3", "2x+3"),
    ("5x - 7y + 11z + 4 = 0", "10x - 14y + 22z + 8 = 0"),
    ("5x - 7y + 11z = -4", "5x - 7y + 11z + 4 = 0"),
    # matrices and vectors
    (
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}",
    ),
    (
        "\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}",
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
    ),
    ("(-7, 16, 5)", "\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}"),
    # bases
    ("52_8", "52_8"),
    ("4210_{5}", "4210_5"),
]

NOT_EQUAL = [
    ("\\frac{1}{3}", "0.333"),
    ("\\frac{15}{3}", "\\frac{14}{3}"),
    ("19", "18"),
    ("18.5", "18"),
    ("-50", "50"),
    ("0.15", "0.015"),
    ("10,080", "10,081"),
    ("91^\\circ", "90^\\circ"),
    ("\\frac{\\pi}{2}", "90^\\circ"),  # a radian value is not read as degrees
    ("\\text{Navin}", "\\text{Evelyn}"),
    ("\\text{seat}", "\\text{east}"),  # same letters, different word
    ("\\text{(B)}", "\\text{(C)}"),
    ("3\\sqrt{12}", "3\\sqrt{13}"),
    ("\\sqrt{2}", "1.41421356"),
    ("2\\pi", "6.283185"),
    ("6 + 5i", "6 - 5i"),
    ("x^2+2x+2", "(x+1)^2"),
    ("2k", "2n"),  # different variable
    ("x^2", "|x| x"),
    ("(3,4)", "(3,4]"),
    ("[3,4]", "(3,4]"),
    ("(6,31,1)", "(6,31,-1)"),
    ("(31,6,-1)", "(6,31,-1)"),  # tuples are ordered
    ("(15,-29)", "15,-29"),  # a point is not a list of two answers
    ("1,2", "1,-2"),
    ("1,-2,3", "1,-2"),
    ("1+\\sqrt{19}", "1 \\pm \\sqrt{19}"),
    ("(0,9) \\cup (9,37)", "(0,9) \\cup (9,36)"),
    ("x=6", "5"),
    ("x+y=5", "5"),  # the left side is not a variable
    ("5x - 7y + 11z + 5 = 0", "5x - 7y + 11z + 4 = 0"),
    (
        "\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
    ),
    (
        "\\begin{pmatrix} -1 \\\\ 0 \\\\ 0 \\\\ -1 \\end{pmatrix}",
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
    ),
    ("53_8", "52_8"),
    ("2^{3^{7}}", "2^{3^{7}}+1"),  # exact integers, no float tolerance
    ("3000!", "3000!+1"),
    ("", "5"),
    ("\\frac{1}{0}", "1"),
    ("\\infty", "-\\infty"),
    ("undefined garbage \\foo{", "5"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_equal_pairs(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)
    assert math_equal(gold, pred), "math_equal should be symmetric"


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUAL)
def test_not_equal_pairs(pred: str, gold: str) -> None:
    assert not math_equal(pred, gold)
    assert not math_equal(gold, pred), "math_equal should be symmetric"


def test_table_is_large_enough() -> None:
    assert len(EQUAL) + len(NOT_EQUAL) >= 80
