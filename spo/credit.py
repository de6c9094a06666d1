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
