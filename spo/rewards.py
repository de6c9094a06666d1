"""What the sampling stages do with rewards beyond a task's grade (DAPO, Yu et al. 2025): the overlong shaping
of a response's reward by its length (docs/design.md#rewards) and the test that keeps a question's group under
dynamic sampling (docs/design.md#dynamic-sampling)."""

from collections.abc import Sequence


def overlong_shaped(reward: float, length: int, max_new_tokens: int, buffer: int, penalty: float) -> float:
    """Return ``reward`` less DAPO's soft overlong penalty: 0 up to ``max_new_tokens - buffer`` tokens, then
    growing linearly to ``penalty`` at ``max_new_tokens`` tokens, and ``penalty`` beyond (an MC continuation
    may run past the limit, as its prefix does not count against its own budget). ``buffer = 0`` shapes
    nothing.

    Args:
        reward: the task's reward of the response.
        length: the response's tokens (a final EOS included), prefix and continuation together for MC.
        max_new_tokens: the response-length limit L.
        buffer: the soft zone's length in tokens, 0 <= buffer <= L.
        penalty: the penalty at L (DAPO: 1).

    >>> overlong_shaped(1.0, 6, max_new_tokens=8, buffer=4, penalty=1.0)  # 2 of 4 tokens into the zone
    0.5
    >>> overlong_shaped(1.0, 4, 8, 4, 1.0), overlong_shaped(0.0, 9, 8, 4, 1.0)
    (1.0, -1.0)
    """
    start = max_new_tokens - buffer
    if buffer == 0 or length <= start:
        return reward  # untouched, not `reward - 0.0`: the default keeps every reward's bits
    return reward - penalty * min(1.0, (length - start) / buffer)


def informative(rewards: Sequence[float]) -> bool:
    """Whether a question's group has rewards that differ: a group of equal rewards gives every member a group
    advantage of exactly 0 (spo.advantages.exact_mean), so dynamic sampling drops it.

    >>> informative([1.0, 0.0, 1.0]), informative([0.0, 0.0]), informative([1.0])
    (True, False, False)
    """
    return any(r != rewards[0] for r in rewards)
