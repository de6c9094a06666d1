"""Statistics over seeds: means with spread, and Student-t intervals for paired differences.

A comparison runs every arm on the same seeds, and arms of one seed share a warm start, so the
difference between two arms is taken seed by seed (paired): it removes the seed-to-seed spread of
the warm start, which is far larger than the gaps between methods. The interval is the Student-t
interval of the mean paired difference with n - 1 degrees of freedom (docs/design.md#comparisons).
"""

import math
from collections.abc import Sequence
from typing import NamedTuple


class Summary(NamedTuple):
    """Mean, sample standard deviation (n - 1) and extremes of a few numbers."""

    mean: float
    std: float
    low: float
    high: float
    n: int


def summarize(xs: Sequence[float]) -> Summary:
    """Return mean, sample std (0 for one number), min, max and count.

    >>> summarize([1.0, 2.0, 3.0])
    Summary(mean=2.0, std=1.0, low=1.0, high=3.0, n=3)
    """
    if not xs:
        raise ValueError("summarize: expected at least one number, got none")
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, std, min(xs), max(xs), n)


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (Simpson's rule on the density).

    >>> round(student_t_cdf(0.0, 3), 6), round(student_t_cdf(12.706, 1), 4)
    (0.5, 0.975)
    """
    if df < 1:
        raise ValueError(f"df: expected >= 1, got {df}")
    if t < 0:
        return 1.0 - student_t_cdf(-t, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))

    # integrate in u = atan(x) so the heavy tail of small df stays accurate: dx = (1 + x^2) du
    top, steps = math.atan(t), 400
    h = top / steps
    total = sum((1 if k in (0, steps) else 4 if k % 2 else 2) * density(math.tan(k * h)) / math.cos(k * h) ** 2
                for k in range(steps + 1))
    return 0.5 + total * h / 3


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p, by bisection on `student_t_cdf`.

    >>> [round(student_t_quantile(0.975, df), 3) for df in (1, 2, 4, 30)]
    [12.706, 4.303, 2.776, 2.042]
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected 0 < p < 1, got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


class Interval(NamedTuple):
    """A mean difference with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of mean(a - b) over pairs (a[i], b[i]) from the same seed; one pair has none (nan).

    >>> [round(x, 3) for x in paired_interval([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])]  # diffs 2, 3, 1: sd 1, t 4.303
    [2.0, -0.484, 4.484, 3]
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_interval: expected two equally long non-empty lists, got {len(a)} and {len(b)}")
    diffs = summarize([x - y for x, y in zip(a, b)])
    if diffs.n < 2:
        return Interval(diffs.mean, math.nan, math.nan, 1)
    half = student_t_quantile(0.5 + level / 2, diffs.n - 1) * diffs.std / math.sqrt(diffs.n)
    return Interval(diffs.mean, diffs.mean - half, diffs.mean + half, diffs.n)
