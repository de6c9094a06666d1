"""A small LaTeX -> sympy converter for final answers (sympy's own `parse_latex` needs antlr).

It reads one scalar expression: numbers (decimals become exact rationals), single-letter variables
(with subscripts), `i` as the imaginary unit, `+ - * / ^ !`, `\\cdot`, `\\times`, `\\div`, implicit
multiplication (`2x`, `3\\sqrt{2}`, `(a+5)(b+2)`), `\\frac`, `\\sqrt[n]{}`, `\\binom`, `|x|`, `\\lfloor`,
`\\lceil`, `\\pi`, `\\infty`, Greek letters and the usual functions (`\\sin^2 x`, `\\log_2 8`). Tuples,
sets, intervals, equations and matrices are split by the grader before they get here.

Numbers too large to build are refused (a `LatexParseError`), because sympy's integer arithmetic runs
in C and a time limit cannot interrupt it: `2^{10^{10}}` would otherwise hang the grader.
"""

import math
import re

import sympy

_MAX_RESULT_DIGITS = 10_000  # refuse exact integer powers/factorials with more digits than this
_TOKEN = re.compile(
    r"(?P<number>\d+\.?\d*|\.\d+)|(?P<command>\\[a-zA-Z]+|\\[{}|])|(?P<letter>[a-zA-Z])"
    r"|(?P<symbol>[-+*/^_()\[\]{}|!])|(?P<space>\s+)"
)
_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
    "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log,
    "exp": sympy.exp,
}  # fmt: skip
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}  # fmt: skip
_IGNORED_COMMANDS = {"\\left", "\\right", "\\displaystyle", "\\limits"}
_PRODUCT_COMMANDS = {"\\cdot", "\\times"}


class LatexParseError(ValueError):
    """The text is not a scalar LaTeX expression this converter understands."""


def latex_to_sympy(latex: str) -> sympy.Expr:
    """Return the sympy expression of one scalar LaTeX answer.

    Args:
        latex: e.g. `3\\sqrt{13}`, `\\frac{x+1}{2}`, `6 - 5i`.

    Raises:
        LatexParseError: unknown syntax, a list/relation, or a number too large to build.

    >>> latex_to_sympy("\\\\frac{3\\\\sqrt{3}}{4}"), latex_to_sympy("2x^2 - 0.5y"), latex_to_sympy("6-5i")
    (3*sqrt(3)/4, 2*x**2 - y/2, 6 - 5*I)
    >>> latex_to_sympy("\\\\sin^2 x + \\\\cos^2 x").simplify()
    1
    """
    tokens = _tokenize(latex)
    parser = _Parser(tokens, latex)
    expr = parser.expression()
    if parser.pos != len(tokens):
        raise LatexParseError(f"unexpected {tokens[parser.pos]!r} at token {parser.pos} in {latex!r}")
    return expr


def _tokenize(latex: str) -> list[str]:
    """Split LaTeX into number, command, letter and symbol tokens (spaces and `\\left`/`\\right` dropped)."""
    tokens, pos = [], 0
    while pos < len(latex):
        match = _TOKEN.match(latex, pos)
        if match is None:
            raise LatexParseError(f"unexpected character {latex[pos]!r} at {pos} in {latex!r}")
        pos = match.end()
        if match.lastgroup != "space" and match.group(0) not in _IGNORED_COMMANDS:
            tokens.append(match.group(0))
    return tokens


def _checked_pow(base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    """base**exponent, refusing exact numbers with more than _MAX_RESULT_DIGITS digits."""
    if base.is_Number and exponent.is_Number and abs(base) not in (0, 1) and abs(exponent) > 1:
        digits = float(abs(exponent)) * math.log10(max(float(abs(base)), 1 / float(abs(base))))
        if digits > _MAX_RESULT_DIGITS:
            raise LatexParseError(f"{base}^{exponent} has about {digits:.3g} digits; refused")
    return sympy.Pow(base, exponent)


def _checked_factorial(n: sympy.Expr) -> sympy.Expr:
    """n!, refusing integers above 3000 (about 9000 digits)."""
    if n.is_Number and n > 3000:
        raise LatexParseError(f"{n}! is too large to build; refused")
    return sympy.factorial(n)


class _Parser:
    """Recursive descent over tokens: expression > term > unary > power > postfix > primary."""

    def __init__(self, tokens: list[str], source: str):
        self.tokens, self.source, self.pos = tokens, source, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise LatexParseError(f"expected {expected or 'more input'!r}, got {token!r} in {self.source!r}")
        self.pos += 1
        return token

    def expression(self) -> sympy.Expr:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> sympy.Expr:
        value = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "/", "\\div") or token in _PRODUCT_COMMANDS:
                self.take()
                value = value / self.unary() if token in ("/", "\\div") else value * self.unary()
            elif self.starts_primary(token):
                value = value * self.power()
            else:
                return value

    def unary(self) -> sympy.Expr:
        if self.peek() in ("-", "+"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        return _checked_pow(base, self.exponent()) if self.peek() == "^" else base

    def exponent(self) -> sympy.Expr:
        """After `^`: a braced group, a signed primary, or a primary; right-associative."""
        self.take("^")
        if self.peek() == "{":
            value = self.group()
        elif self.peek() == "-":
            self.take()
            value = -self.postfix()
        else:
            value = self.postfix()
        return _checked_pow(value, self.exponent()) if self.peek() == "^" else value

    def postfix(self) -> sympy.Expr:
        value = self.primary()
        while self.peek() == "!":
            self.take()
            value = _checked_factorial(value)
        return value

    def starts_primary(self, token: str | None) -> bool:
        if token is None:
            return False
        if token[0].isdigit() or token[0] == "." or token.isalpha() or token in ("(", "[", "{"):
            return True
        name = token[1:]
        return token.startswith("\\") and (
            name in _FUNCTIONS
            or name in _GREEK
            or name in ("frac", "sqrt", "pi", "infty", "binom")
            or name in ("lfloor", "lceil")
        )

    def group(self) -> sympy.Expr:
        """A `{...}` group, or a single token as TeX allows (`\\frac12`)."""
        if self.peek() != "{":
            return self.primary()
        self.take("{")
        value = self.expression()
        self.take("}")
        return value

    def primary(self) -> sympy.Expr:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return self.subscripted_number(token)
        if token.isalpha():
            return self.letter(token)
        closing = {"(": ")", "[": "]", "{": "}", "|": "|", "\\lfloor": "\\rfloor", "\\lceil": "\\rceil"}
        if token in closing:
            value = self.expression()
            self.take(closing[token])
            wrap = {"|": sympy.Abs, "\\lfloor": sympy.floor, "\\lceil": sympy.ceiling}.get(token)
            return wrap(value) if wrap else value
        if token.startswith("\\"):
            return self.command(token[1:])
        raise LatexParseError(f"unexpected {token!r} in {self.source!r}")

    def subscripted_number(self, token: str) -> sympy.Expr:
        """A number, exact; `52_8` is read as a base-8 numeral."""
        if self.peek() != "_":
            return sympy.Rational(token)
        self.take("_")
        base = self.group()
        try:
            return sympy.Integer(int(token, int(base)))
        except (TypeError, ValueError) as error:
            raise LatexParseError(f"{token}_{base} is not a numeral in base {base}") from error

    def letter(self, name: str) -> sympy.Expr:
        if self.peek() == "_":
            self.take("_")
            subscript = self.take() if self.peek() != "{" else self.braced_text()
            return sympy.Symbol(f"{name}_{subscript}")
        return sympy.I if name == "i" else sympy.Symbol(name)

    def braced_text(self) -> str:
        self.take("{")
        start = self.pos
        while self.peek() not in ("}", None):
            self.take()
        self.take("}")
        return "".join(self.tokens[start : self.pos - 1])

    def command(self, name: str) -> sympy.Expr:
        if name == "frac":
            return self.group() / self.group()
        if name == "binom":
            return sympy.binomial(self.group(), self.group())
        if name == "sqrt":
            index = None
            if self.peek() == "[":
                self.take("[")
                index = self.expression()
                self.take("]")
            radicand = self.group()
            return sympy.sqrt(radicand) if index is None else sympy.root(radicand, index)
        if name == "pi":
            return sympy.pi
        if name == "infty":
            return sympy.oo
        if name in _GREEK:
            return sympy.Symbol(name)
        if name in _FUNCTIONS:
            return self.function(_FUNCTIONS[name], name)
        raise LatexParseError(f"unsupported command \\{name} in {self.source!r}")

    def function(self, function, name: str) -> sympy.Expr:
        """`\\sin x`, `\\sin^2(x)`, `\\log_2 8`: the argument is a parenthesised group or an implicit product."""
        log_base = power = None
        if name == "log" and self.peek() == "_":
            self.take("_")
            log_base = self.group()
        if self.peek() == "^":
            self.take("^")
            power = self.group()
        if self.peek() in ("(", "{"):
            argument = self.primary()
        else:
            argument = self.power()
            while self.starts_primary(self.peek()) and not self.peek().startswith("\\"):
                argument = argument * self.power()
        value = sympy.log(argument, log_base) if log_base is not None else function(argument)
        return _checked_pow(value, power) if power is not None else value


def expressions_equal(pred: sympy.Expr, gold: sympy.Expr) -> bool:
    """True when pred - gold is zero: numerically at three probe points (exactly 0 for numbers), else simplify.

    Numeric probing is fast and, for the algebraic answers of MATH, as reliable as `simplify`;
    `simplify` only decides when no probe gives a finite value. Infinities must match exactly.

    >>> x = sympy.Symbol("x")
    >>> expressions_equal(sympy.cot(x), sympy.cos(x) / sympy.sin(x)), expressions_equal(x**2, sympy.Abs(x) * x)
    (True, False)
    """
    if pred == gold:
        return True
    infinities = (sympy.oo, -sympy.oo, sympy.zoo)
    if pred.has(*infinities) or gold.has(*infinities):
        return False
    difference = pred - gold
    if difference.is_Rational:
        return False  # exact and nonzero (a zero difference would have made pred == gold)
    symbols = sorted(difference.free_symbols | gold.free_symbols, key=str)
    verdicts = [_close_to_zero(difference, gold, dict(zip(symbols, _probe_point(len(symbols), trial))))
                for trial in range(3 if symbols else 1)]  # fmt: skip
    if all(verdict is None for verdict in verdicts):
        return sympy.simplify(difference) == 0
    return all(verdict is not False for verdict in verdicts)


def _probe_point(n_symbols: int, trial: int) -> list[float]:
    """Distinct irrational-looking values for n symbols; trial 1 is negative to catch sign errors."""
    sign = -1.0 if trial == 1 else 1.0
    return [
        sign * ((j + 1) * 0.6180339887 + 0.1 * (j + 1) ** 2 + 0.3183098862 * trial) for j in range(n_symbols)
    ]


def _close_to_zero(difference: sympy.Expr, scale: sympy.Expr, point: dict) -> bool | None:
    """|difference| <= 1e-9 * max(1, |scale|) at a point; None where either is not a finite number."""
    value, size = sympy.N(difference.subs(point), 30), sympy.N(scale.subs(point), 30)
    if not (value.is_number and size.is_number and value.is_finite and size.is_finite):
        return None
    return bool(abs(value) <= 1e-9 * max(1, abs(size)))
