"""Statistics over seeds: summaries, Student-t quantiles and paired intervals."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spo.stats import paired_interval, student_t_cdf, student_t_quantile, summarize

T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 19: 2.0930, 29: 2.0452}
"""Two-sided 95% critical values of Student's t from printed tables."""


@pytest.mark.parametrize("df", sorted(T_975))
def test_t_quantiles_match_the_printed_table(df):
    assert student_t_quantile(0.975, df) == pytest.approx(T_975[df], abs=2e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-T_975[df], abs=2e-4)


def test_t_cdf_approaches_the_normal():
    assert student_t_cdf(1.959964, 10_000) == pytest.approx(0.975, abs=1e-4)
    assert student_t_cdf(-1.0, 3) == pytest.approx(1 - student_t_cdf(1.0, 3))


def test_summarize_uses_the_sample_std():
    s = summarize([0.2, 0.4])  # mean 0.3, deviations 0.1: sqrt(0.02 / 1)
    assert (s.mean, s.low, s.high, s.n) == (pytest.approx(0.3), 0.2, 0.4, 2)
    assert s.std == pytest.approx(math.sqrt(0.02))
    assert summarize([5.0]).std == 0.0
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_paired_interval_by_hand():
    # differences 0.1, 0.3: mean 0.2, sd sqrt(0.02), half width 12.706 * sd / sqrt(2) = 1.2706
    interval = paired_interval([0.5, 0.6], [0.4, 0.3])
    assert interval.mean == pytest.approx(0.2)
    assert (interval.low, interval.high) == (pytest.approx(0.2 - 1.27062, abs=1e-4), pytest.approx(0.2 + 1.27062, abs=1e-4))
    assert math.isnan(paired_interval([1.0], [0.0]).low)
    with pytest.raises(ValueError, match="equally long"):
        paired_interval([1.0], [1.0, 2.0])


@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=2, max_size=12), st.floats(-1, 1))
def test_a_common_shift_of_both_arms_leaves_the_paired_interval(pairs, shift):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    plain = paired_interval(a, b)
    shifted = paired_interval([x + shift for x in a], [y + shift for y in b])
    assert shifted.mean == pytest.approx(plain.mean, abs=1e-9)
    assert shifted.high - shifted.low == pytest.approx(plain.high - plain.low, abs=1e-9)
    assert plain.low <= plain.mean <= plain.high
