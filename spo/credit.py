"""The credit-assignment probe: where a method puts the blame when a response goes wrong.

On a task whose correct response is unique (arith: the left-to-right chain of thought is fully
determined by the question), the first token at which a sampled response leaves the target is
known: the first wrong token. A method that assigns credit well puts the negative advantage on
that token, not on the correct tokens before it. GRPO gives every token of a failed rollout the
same advantage, so about 1/T of the blame lands on the first wrong token; SPO's segment values
should concentrate it there. See docs/design.md#credit-probe.

A response path is the response from the end of the original prompt: a chain episode's response,
or, for a tree edge, the earlier segments (the tail of its prompt ids) followed by its segment.
"""

from collections.abc import Sequence
from dataclasses import dataclass

STOP = None
"""The text piece of a stop token: right only where the target ends."""


def first_wrong_token(pieces: Sequence[str | None], target: str) -> int | None:
    """Return the index of the first token at which the response stops being a prefix of the target.

    Args:
        pieces: the decoded text of each response token, `STOP` (None) for a stop token.
        target: the unique correct response text (the stop token follows it).

    Returns:
        The index, or None when every token agrees with the target (a correct response, or a
        correct beginning cut short).

    >>> first_wrong_token([" ", "1", "+", "2", "=", "4", None], " 1+2=3")  # "4" where "3" belongs
    5
    >>> first_wrong_token([" ", "1", "+", "2", "=", "3", None], " 1+2=3") is None
    True
    >>> first_wrong_token([" ", "1", None], " 1+2=3")  # stopped early: the stop token is wrong
    2
    >>> first_wrong_token([" 1", "+2", "=3", "."], " 1+2=3")  # went on where it should have stopped
    3
    """
    done = 0
    for index, piece in enumerate(pieces):
        if piece is STOP:
            return None if done == len(target) else index
        if not target.startswith(piece, done):
            return index
        done += len(piece)
    return None


@dataclass(frozen=True)
class CreditSplit:
    """How one episode's negative advantage mass, sum(max(-A, 0)) over its tokens, divides up."""

    negative: float
    """All of it."""
    on_first_wrong: float
    """On the path's first wrong token, when it lies in this episode."""
    on_correct: float
    """On tokens before the path's first wrong token (or on a path without one): correct tokens."""
    after: float
    """On tokens after the first wrong token."""
    correct_sum: float
    """Sum of the advantages of the trained correct tokens, when this episode holds the first wrong token."""
    correct_count: int
    """How many trained correct tokens that sum covers."""


def credit_split(
    advantages: Sequence[float], mask: Sequence[bool], offset: int, first_wrong: int | None
) -> CreditSplit:
    """Split one episode's negative advantage mass by where its tokens lie relative to the first wrong token.

    Args:
        advantages: (T,) the episode's per-token advantages (0 outside the loss mask).
        mask: (T,) the tokens that are trained.
        offset: path position of the episode's first token (0 for a whole rollout).
        first_wrong: path position of the first wrong token, None when the path has none.

    >>> credit_split([-0.5, -0.5, -1.0, -0.25], [True] * 4, offset=0, first_wrong=2)
    CreditSplit(negative=2.25, on_first_wrong=1.0, on_correct=1.0, after=0.25, correct_sum=-1.0, correct_count=2)
    """
    if not len(advantages) == len(mask):
        raise ValueError(f"advantages has {len(advantages)} tokens, mask {len(mask)}: expected equal lengths")
    wrong = None if first_wrong is None else first_wrong - offset
    negative = on_first = on_correct = after = correct_sum = 0.0
    correct_count = 0
    holds_error = wrong is not None and 0 <= wrong < len(advantages)
    for t, (a, trained) in enumerate(zip(advantages, mask)):
        blame = max(-a, 0.0)
        negative += blame
        if wrong is None or t < wrong:
            on_correct += blame
            if holds_error and trained:
                correct_sum += a
                correct_count += 1
        elif t == wrong:
            on_first += blame
        else:
            after += blame
    return CreditSplit(negative, on_first, on_correct, after, correct_sum, correct_count)


def net_credit(
    responses: Sequence[Sequence[int]],
    advantages: Sequence[Sequence[float]],
    first_wrong: Sequence[int | None],
) -> CreditSplit:
    """The probe on the net credit of one prompt's rollouts: advantages summed per (state, token) pair first.

    A policy-gradient step moves log p(token | state) by the sum of the advantages of every rollout of the
    batch that took that token in that state, so where rollouts of one prompt share a prefix their advantages
    add up, and cancel where the prefix led as often to success as to failure. GRPO gives every token of a
    failed rollout the same blame, but a correct prefix that correct rollouts share nets out; the per-episode
    split (`credit_split`) cannot show that. A pair is a response prefix; it is correct, the first wrong token
    or after it by the same rule as in `credit_split`, and a shared prefix has one place in every rollout.
    The PPO ratio, clipping, whitening and the KL term are left out: this is the step's first-order direction.

    Args:
        responses: the rollouts' response token ids (one prompt).
        advantages: per-token advantages of each rollout (0 outside the loss mask).
        first_wrong: each rollout's first wrong token, None when it has none.

    Returns:
        The split of the negative net mass; `correct_sum` and `correct_count` cover the correct pairs with a
        non-zero net on the paths of failed rollouts.

    Two rollouts share "5 6"; GRPO gives the correct one +1 per token and the failed one -1: only the wrong
    token keeps any blame, where the per-episode split puts 1/3 of it there.

    >>> net_credit([[5, 6, 7], [5, 6, 8]], [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], [None, 2])
    CreditSplit(negative=1.0, on_first_wrong=1.0, on_correct=0.0, after=0.0, correct_sum=0.0, correct_count=0)
    """
    net: dict[tuple[int, ...], float] = {}
    place: dict[tuple[int, ...], str] = {}
    failed_path: set[tuple[int, ...]] = set()
    for ids, advantage, wrong in zip(responses, advantages, first_wrong, strict=True):
        if len(ids) != len(advantage):
            raise ValueError(f"a response has {len(ids)} tokens but {len(advantage)} advantages")
        for t, a in enumerate(advantage):
            pair = tuple(ids[: t + 1])
            net[pair] = net.get(pair, 0.0) + a
            place[pair] = "correct" if wrong is None or t < wrong else "first" if t == wrong else "after"
            if wrong is not None and t < wrong:
                failed_path.add(pair)
    blame = {pair: max(-value, 0.0) for pair, value in net.items()}
    correct = [net[pair] for pair in failed_path if net[pair] != 0.0]

    def mass(where: str) -> float:
        return sum((value for pair, value in blame.items() if place[pair] == where), 0.0)

    return CreditSplit(sum(blame.values(), 0.0), mass("first"), mass("correct"), mass("after"), sum(correct, 0.0),
                       len(correct))
