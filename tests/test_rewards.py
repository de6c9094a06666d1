"""spo/rewards.py: DAPO's overlong shaping and the group test of dynamic sampling, by hand."""

import pytest

from spo.rewards import informative, overlong_shaped


@pytest.mark.parametrize(("length", "expected"), [
    (10, 1.0),  # L - buffer = 12 tokens or fewer: untouched
    (12, 1.0),
    (13, 0.5),  # 1 of the 4 buffer tokens: 1 - 2 * 1/4
    (14, 0.0),  # 2 of 4: 1 - 2 * 2/4
    (16, -1.0),  # at L = 16: the whole penalty, 1 - 2
    (30, -1.0),  # past L (an MC prefix plus its continuation): still the whole penalty, no more
])
def test_overlong_shaping_is_linear_in_the_last_buffer_tokens(length, expected):
    # L = 16, buffer 4, penalty 2: reward - 2 * min(1, (length - 12) / 4)
    assert overlong_shaped(1.0, length, max_new_tokens=16, buffer=4, penalty=2.0) == pytest.approx(expected)


def test_no_buffer_keeps_every_reward_bit_for_bit():
    assert str(overlong_shaped(-0.0, 16, max_new_tokens=16, buffer=0, penalty=1.0)) == "-0.0"  # not -0.0 - 0.0


def test_only_groups_whose_rewards_differ_are_informative():
    assert informative([0.0, 1.0]) and informative([-2.0, -2.0, 0.0])
    assert not informative([1.0, 1.0, 1.0]) and not informative([0.0]) and not informative([])
