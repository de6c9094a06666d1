"""Partitions of a response into segments: where the MC boundaries go.

A boundary is a prefix length: boundary ``b`` is the state after the first ``b`` response tokens
(``b = 0`` is the bare prompt). Every partition returns a sorted list of unique ints; ``segments``
turns boundaries into half-open token ranges. The pipeline picks a partition by name from config
through ``PARTITIONS`` / ``partition_boundaries`` (docs/design.md#baselines: SPO and the baselines
differ only in partition and advantage).
"""

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral


def validate_boundaries(boundaries: Sequence[int], length: int) -> None:
    """Raise ValueError unless ``boundaries`` are strictly increasing ints within [0, length].

    Args:
        boundaries: prefix lengths, one per boundary.
        length: number of response tokens T.

    >>> validate_boundaries([0, 3, 5], length=5)
    >>> validate_boundaries([3, 3], length=5)
    Traceback (most recent call last):
    ...
    ValueError: boundaries: expected strictly increasing ints in [0, 5], got [3, 3] (spo/segments.py)
    """
    if length < 0:
        raise ValueError(f"length: expected >= 0, got {length} (spo/segments.py)")
    ok = all(isinstance(b, Integral) and 0 <= b <= length for b in boundaries) and all(
        a < b for a, b in itertools.pairwise(boundaries)
    )
    if not ok:
        raise ValueError(
            f"boundaries: expected strictly increasing ints in [0, {length}], got {list(boundaries)} "
            "(spo/segments.py)"
        )


def cutpoint_boundaries(
    probs: Sequence[float], tau: float = 0.9, interval: int = 5, max_boundaries: int | None = None
) -> list[int]:
    """Return SPO-chain boundaries: just before every ``interval``-th cutpoint, starting with the first.

    A cutpoint is a token with ``p < tau`` (strict, docs/design.md#threshold). The boundary before
    cutpoint token ``i`` is prefix length ``i``, so every segment after the first starts with a
    cutpoint and holds ``interval`` cutpoints (the last may hold fewer); docs/design.md#chain-partition, Figure 1.
    ``max_boundaries`` keeps the EARLIEST boundaries: the last kept segment then runs to the end
    of the response and takes ``reward - V(last boundary)`` (docs/design.md#mc-budget).

    Args:
        probs: (T,) probability of each sampled response token, each in [0, 1].
        tau: cutpoint threshold; the reference hard-codes 0.9.
        interval: cutpoints per segment ("int" in the paper); the reference uses 5.
        max_boundaries: cap on boundaries per rollout; 0 or None (the reference) means unlimited.

    >>> cutpoint_boundaries([0.99, 0.5, 0.95, 0.3, 0.2, 0.1], interval=2)
    [1, 4]
    >>> cutpoint_boundaries([0.5, 0.5, 0.5], interval=1, max_boundaries=2)
    [0, 1]
    """
    if interval < 1:
        raise ValueError(f"interval: expected >= 1, got {interval} (spo/segments.py)")
    if max_boundaries is not None and max_boundaries < 0:
        raise ValueError(f"max_boundaries: expected None or >= 0, got {max_boundaries} (spo/segments.py)")
    bad = [(i, p) for i, p in enumerate(probs) if not 0.0 <= p <= 1.0]  # also catches NaN
    if bad:
        raise ValueError(f"probs: expected values in [0, 1], got (index, value) {bad[:5]} (spo/segments.py)")
    cutpoints = [i for i, p in enumerate(probs) if p < tau]
    return cutpoints[::interval][: max_boundaries or None]


def fixed_count_boundaries(length: int, n_segments: int = 4) -> list[int]:
    """Return boundaries splitting ``length`` tokens into ``n_segments`` near-equal chunks.

    The first ``length % n_segments`` chunks are one token longer; boundaries sit at chunk ends,
    never at 0 or ``length`` (the reference's fixed-token-count ablation, docs/design.md#baselines). Responses shorter
    than ``n_segments`` tokens give fewer boundaries, without duplicates.

    Args:
        length: number of response tokens T.
        n_segments: number of chunks; the reference uses 4.

    >>> fixed_count_boundaries(10)  # chunks 3, 3, 2, 2
    [3, 6, 8]
    >>> fixed_count_boundaries(2)  # chunks 1, 1, 0, 0
    [1]
    """
    if length < 0 or n_segments < 1:
        raise ValueError(
            f"expected length >= 0 and n_segments >= 1, got length={length}, n_segments={n_segments} "
            "(spo/segments.py)"
        )
    base, longer = divmod(length, n_segments)
    ends, end = [], 0
    for chunk in range(n_segments - 1):
        end += base + (1 if chunk < longer else 0)
        if 0 < end < length:  # empty chunks of a short response all end at 0 or length
            ends.append(end)
    return ends


def fixed_length_boundaries(length: int, segment_tokens: int) -> list[int]:
    """Return a boundary every ``segment_tokens`` tokens, never at 0 or ``length``.

    Args:
        length: number of response tokens T.
        segment_tokens: tokens per segment (M in the SPO-tree configs, e.g. 30 or 600).

    >>> fixed_length_boundaries(10, 4)
    [4, 8]
    >>> fixed_length_boundaries(8, 4)
    [4]
    """
    if length < 0 or segment_tokens < 1:
        raise ValueError(
            f"expected length >= 0 and segment_tokens >= 1, got length={length}, "
            f"segment_tokens={segment_tokens} (spo/segments.py)"
        )
    return list(range(segment_tokens, length, segment_tokens))


def step_boundaries(token_texts: Sequence[str], step_marker: str = "\n") -> list[int]:
    """Return a boundary after every token that ends a reasoning step (VinePPO's steps: lines).

    A token ends a step when its text contains ``step_marker`` anywhere, not only at its end: a
    token such as ``".\\n\\nThe"`` belongs to the step in which it starts (VinePPO maps characters
    to tokens by token start offsets), so the boundary goes after it. A run of blank steps is one
    step end: no boundary before a whitespace-only token that itself contains the marker. Never at 0
    or at the response length.

    Args:
        token_texts: (T,) decoded text of each response token.
        step_marker: what ends a step: a newline (GSM8K, MATH), or ";" for the arith task's chain.

    >>> step_boundaries(["a", "=1", "\\n", "b", ".\\n\\nSo", " c", "\\n"])
    [3, 5]
    >>> step_boundaries(["x", "\\n", "\\n\\n", "y"])  # blank lines join the step before
    [3]
    >>> step_boundaries(list(" 1+2=3; 3+4=7. #### 7"), step_marker=";")  # after the ";" at index 6
    [7]
    """
    if not step_marker:
        raise ValueError("step_marker: expected a non-empty string, got '' (spo/segments.py)")
    length = len(token_texts)
    return [
        i + 1
        for i, text in enumerate(token_texts)
        if step_marker in text
        and i + 1 < length
        and not (token_texts[i + 1].strip() == "" and step_marker in token_texts[i + 1])
    ]


def no_boundaries(length: int) -> list[int]:
    """Return no boundary: the whole response is one segment (the GRPO / RLOO baselines).

    Args:
        length: number of response tokens T (checked, otherwise unused).

    >>> no_boundaries(7)
    []
    """
    if length < 0:
        raise ValueError(f"length: expected >= 0, got {length} (spo/segments.py)")
    return []


def segments(boundaries: Sequence[int], length: int) -> list[tuple[int, int]]:
    """Return the non-empty half-open token ranges that the boundaries cut [0, length) into.

    The leading range before the first boundary is included when that boundary is > 0. A
    boundary at ``length`` adds no range (it would be empty).

    Args:
        boundaries: (S,) strictly increasing prefix lengths in [0, length].
        length: number of response tokens T.

    >>> segments([2, 5], length=7)
    [(0, 2), (2, 5), (5, 7)]
    >>> segments([], length=3)
    [(0, 3)]
    """
    validate_boundaries(boundaries, length)
    cuts = sorted({0, length, *(int(b) for b in boundaries)})
    return [(start, stop) for start, stop in itertools.pairwise(cuts)]


@dataclass(frozen=True)
class Partition:
    """One way to cut a response, as the config names it."""

    boundaries: Callable[..., list[int]]
    """The function: its first argument is the per-response input `reads`, the rest are `params`."""
    reads: str
    """"probs", "token_texts" or "length"."""
    params: tuple[str, ...] = ()
    """Its keyword arguments, each a field of the same name in `PartitionConfig` (spo/config.py)."""


PARTITIONS: dict[str, Partition] = {
    "cutpoint": Partition(cutpoint_boundaries, "probs", ("tau", "interval", "max_boundaries")),
    "fixed_count": Partition(fixed_count_boundaries, "length", ("n_segments",)),
    "fixed_length": Partition(fixed_length_boundaries, "length", ("segment_tokens",)),
    "steps": Partition(step_boundaries, "token_texts", ("step_marker",)),
    "none": Partition(no_boundaries, "length"),
}
"""Partitions by config name (docs/design.md#baselines): SPO's cutpoints and the baselines' cuts."""


def partition_boundaries(
    name: str,
    *,
    probs: Sequence[float] | None = None,
    token_texts: Sequence[str] | None = None,
    length: int | None = None,
    prompt_boundary: bool = False,
    **params,
) -> list[int]:
    """Return the boundaries of partition ``name`` for one response.

    Pass whichever per-response inputs you have; the partition takes the one it needs, and all
    that are given must agree on the length. ``params`` are the partition's own keyword arguments
    (``tau``, ``interval``, ``max_boundaries``, ``n_segments``, ``segment_tokens``).

    Args:
        name: one of ``PARTITIONS``.
        probs: (T,) token probabilities (needed by "cutpoint").
        token_texts: (T,) decoded token texts (needed by "steps").
        length: T (needed by "fixed_count" and "fixed_length" unless probs or token_texts is given).
        prompt_boundary: also cut at 0 (the bare prompt), so the first segment is valued from the prompt
            rather than given 0 (VinePPO values the query too).
        **params: keyword arguments of the partition function.

    >>> partition_boundaries("fixed_count", probs=[0.5] * 8, n_segments=4)
    [2, 4, 6]
    >>> partition_boundaries("fixed_count", length=8, n_segments=4, prompt_boundary=True)
    [0, 2, 4, 6]
    >>> partition_boundaries("cutpoints", length=3)
    Traceback (most recent call last):
    ...
    ValueError: unknown partition 'cutpoints'; choose one of ['cutpoint', 'fixed_count', 'fixed_length', 'none', 'steps']
    """
    if name not in PARTITIONS:
        raise ValueError(f"unknown partition {name!r}; choose one of {sorted(PARTITIONS)}")
    lengths = {k: len(v) for k, v in [("probs", probs), ("token_texts", token_texts)] if v is not None}
    if length is not None:
        lengths["length"] = length
    if len(set(lengths.values())) > 1:
        raise ValueError(f"partition {name!r}: inputs disagree on the response length: {lengths}")
    inputs = {"probs": probs, "token_texts": token_texts, "length": next(iter(lengths.values()), None)}
    partition = PARTITIONS[name]
    if inputs[partition.reads] is None:
        raise ValueError(f"partition {name!r} needs {partition.reads!r}, got None (spo/segments.py)")
    boundaries = partition.boundaries(inputs[partition.reads], **params)
    return [0, *boundaries] if prompt_boundary and boundaries[:1] != [0] else boundaries
