"""Advantages: SPO-chain token advantages, GRPO/RLOO group advantages, SPO-tree edge advantages.

Plain floats in and out. Means and stds of a group whose members are all equal are exact (the
member itself, 0.0), so all-equal groups give advantages of exactly 0.0: float round-off such as
``(0.1 + 0.1 + 0.1) / 3 != 0.1`` would otherwise leave 1e-17 advantages that survive the
"drop edges with advantage exactly 0" rule (spo-decisions rule 10) and are blown up by grpo's
division by ``std + 1e-8``.
"""

import math
from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np

from spo.segments import validate_boundaries

STD_EPS = 1e-8
"""Added to the std in every grpo division, as the reference (§3.3, §4.6)."""


def _check_finite(name: str, xs: Sequence[float]) -> None:
    bad = [(i, x) for i, x in enumerate(xs) if not math.isfinite(x)]
    if bad:
        raise ValueError(f"{name}: expected finite numbers, got (index, value) {bad[:5]} (spo/advantages.py)")


def exact_mean(xs: Sequence[float]) -> float:
    """Return the mean of ``xs``; exactly ``xs[0]`` when all members are equal.

    >>> exact_mean([0.1, 0.1, 0.1]), sum([0.1, 0.1, 0.1]) / 3
    (0.1, 0.10000000000000002)
    """
    if not xs:
        raise ValueError("expected a non-empty group, got [] (spo/advantages.py)")
    if all(x == xs[0] for x in xs):
        return float(xs[0])
    return math.fsum(xs) / len(xs)


def population_std(xs: Sequence[float]) -> float:
    """Return the population (divide by n) std of ``xs``; exactly 0.0 when all members are equal.

    >>> population_std([1.0, 0.0])
    0.5
    """
    mean = exact_mean(xs)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))


def segment_advantages(values: Sequence[float], reward: float) -> list[float]:
    """Return V(end) - V(start) for each segment of one rollout; the last end value is the reward.

    Args:
        values: (S,) values at the S start boundaries.
        reward: the rollout's reward, the last segment's end value.

    >>> segment_advantages([0.5, 0.75], reward=1.0)
    [0.25, 0.25]
    """
    ends = [*values[1:], reward]
    return [float(end - start) for start, end in zip(values, ends)]


def chain_token_advantages(
    probs: Sequence[float],
    boundaries: Sequence[int],
    values: Sequence[float],
    reward: float,
    tau: float = 0.9,
    prob_mask: bool = True,
) -> list[float]:
    """Return each response token's SPO-chain advantage (reference §2.5, §2.7, rule 2).

    Segment ``[b_k, b_{k+1})`` gets ``values[k+1] - values[k]``, the last segment ``[b_m, T)``
    gets ``reward - values[-1]``. Tokens before the first boundary get 0 (no value to start from)
    unless that boundary is 0. With ``prob_mask``, tokens with ``p >= tau`` get 0 (the same strict
    ``p < tau`` rule as the cutpoints). No boundaries: all 0.

    Args:
        probs: (T,) probabilities of the response tokens; also fixes T.
        boundaries: (S,) strictly increasing prefix lengths in [0, T].
        values: (S,) MC value at each boundary.
        reward: the rollout's reward.
        tau: probability-mask threshold.
        prob_mask: zero the advantage of tokens with ``p >= tau``.

    >>> chain_token_advantages([0.5, 0.95, 0.3, 0.9], [0, 2], [0.5, 0.25], reward=1.0)
    [-0.25, 0.0, 0.75, 0.0]
    """
    length = len(probs)
    validate_boundaries(boundaries, length)
    if len(values) != len(boundaries):
        raise ValueError(
            f"values: expected one per boundary ({len(boundaries)}), got {len(values)} (spo/advantages.py)"
        )
    _check_finite("values", [*values, reward])
    advantages = np.zeros(length)  # (T,)
    if boundaries:
        seg_lengths = np.diff([*boundaries, length])  # (S,)
        advantages[boundaries[0] :] = np.repeat(segment_advantages(values, reward), seg_lengths)
    if prob_mask:
        advantages[~(np.asarray(probs, dtype=float) < tau)] = 0.0
    return advantages.tolist()


def grpo_advantages(rewards: Sequence[float]) -> list[float]:
    """Return ``(s - mean) / (population std + 1e-8)`` for each member of one group (§4.6).

    >>> [round(a, 6) for a in grpo_advantages([1.0, 0.0])]  # mean 0.5, std 0.5: +-0.5 / (0.5 + 1e-8)
    [1.0, -1.0]
    """
    mean, std = exact_mean(rewards), population_std(rewards)
    return [(s - mean) / (std + STD_EPS) for s in rewards]


def rloo_advantages(rewards: Sequence[float]) -> list[float]:
    """Return ``s_i - mean(s_j for j != i)`` for each member of one group; a group of one gives 0.

    Computed as ``n / (n - 1) * (s_i - mean)``, the same quantity, so equal groups give exact 0.

    >>> rloo_advantages([1.0, 0.0, 0.0])  # 1 - 0, 0 - 1/2, 0 - 1/2
    [1.0, -0.5, -0.5]
    """
    n = len(rewards)
    if n == 1:
        return [0.0]
    mean = exact_mean(rewards)
    return [n / (n - 1) * (s - mean) for s in rewards]


GROUP_ADVANTAGES: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
}
"""Group baselines by config name (spo-decisions rule 13)."""


def group_advantages(rewards: Sequence[float], method: str = "grpo") -> list[float]:
    """Return one advantage per rollout of one prompt's group of N rollouts.

    Args:
        rewards: (N,) rewards of the group, N >= 1.
        method: one of ``GROUP_ADVANTAGES``.

    >>> group_advantages([0.0, 0.0, 0.0], method="rloo")
    [0.0, 0.0, 0.0]
    """
    if method not in GROUP_ADVANTAGES:
        raise ValueError(f"unknown group advantage {method!r}; choose one of {sorted(GROUP_ADVANTAGES)}")
    if not rewards:
        raise ValueError("rewards: expected a non-empty group, got [] (spo/advantages.py)")
    _check_finite("rewards", rewards)
    return GROUP_ADVANTAGES[method](rewards)


def tree_children(parents: Sequence[int | None]) -> list[list[int]]:
    """Return each node's children after checking ``parents`` describes one tree.

    Args:
        parents: parent index of each node, None for the one root; nodes in any order.

    >>> tree_children([None, 0, 0, 1])
    [[1, 2], [3], [], []]
    """
    n = len(parents)
    roots = [i for i, p in enumerate(parents) if p is None]
    if len(roots) != 1:
        raise ValueError(f"parents: expected exactly one root (None), got roots {roots} (spo/advantages.py)")
    children: list[list[int]] = [[] for _ in range(n)]
    for node, parent in enumerate(parents):
        if parent is None:
            continue
        if not (isinstance(parent, Integral) and 0 <= parent < n and parent != node):
            raise ValueError(
                f"parents[{node}]: expected another node's index in [0, {n}), got {parent!r} (spo/advantages.py)"
            )
        children[parent].append(node)
    reached, frontier = {roots[0]}, [roots[0]]
    while frontier:
        kids = children[frontier.pop()]
        reached.update(kids)
        frontier.extend(kids)
    if len(reached) != n:
        unreached = sorted(set(range(n)) - reached)
        raise ValueError(f"parents: nodes {unreached} are not reachable from root {roots[0]} (a cycle)")
    return children


def tree_values(parents: Sequence[int | None], rewards: Sequence[float | None]) -> list[float]:
    """Return each node's value: its reward at a leaf, else the mean of its CHILDREN's values.

    The recursive mean (reference §3.2) differs from the mean over all leaves below a node when
    some children finish early.

    Args:
        parents: parent index of each node, None for the root.
        rewards: a float for each leaf, None for each inner node.

    >>> tree_values([None, 0, 0, 1, 1], [None, None, 1.0, 0.0, 0.0])  # V1 = 0, V0 = (0 + 1) / 2
    [0.5, 0.0, 1.0, 0.0, 0.0]
    """
    children = tree_children(parents)
    if len(rewards) != len(parents):
        raise ValueError(f"rewards: expected {len(parents)} (one per node), got {len(rewards)}")
    for node, (kids, reward) in enumerate(zip(children, rewards)):
        if not kids and reward is None:
            raise ValueError(f"rewards[{node}]: node {node} is a leaf, expected a float reward, got None")
        if kids and reward is not None:
            raise ValueError(f"rewards[{node}]: node {node} has children {kids}, expected None, got {reward}")
    _check_finite("rewards", [r for r in rewards if r is not None])
    values: list[float | None] = [None if r is None else float(r) for r in rewards]
    order = [parents.index(None)]
    for node in order:  # breadth-first; grows while iterating
        order.extend(children[node])
    for node in reversed(order):  # children before parents
        if children[node]:
            values[node] = exact_mean([values[k] for k in children[node]])
    return values


TREE_ADVANTAGE_METHODS = ("grpo", "rloo")
"""Edge advantages: rloo = V(child) - V(parent) (reference name, no leave-one-out); grpo divides by std."""


def tree_values_and_advantages(
    parents: Sequence[int | None], rewards: Sequence[float | None], method: str = "rloo"
) -> tuple[list[float], list[float | None]]:
    """Return node values and edge advantages of one SPO-tree (reference §3.2-3.3, rule 10).

    A non-root node's advantage is ``V(node) - V(parent)`` ("rloo") or that divided by the
    population std of the parent's children values + 1e-8 ("grpo"). The root has no edge: its
    advantage is None.

    Args:
        parents: parent index of each node, None for the root; nodes in any order.
        rewards: a float for each leaf, None for each inner node.
        method: one of ``TREE_ADVANTAGE_METHODS``.

    >>> values, adv = tree_values_and_advantages([None, 0, 0], [None, 1.0, 0.0], method="grpo")
    >>> values, [None if a is None else round(a, 6) for a in adv]  # V0 = 0.5, std 0.5, +-0.5 / 0.5
    ([0.5, 1.0, 0.0], [None, 1.0, -1.0])
    """
    if method not in TREE_ADVANTAGE_METHODS:
        raise ValueError(f"unknown tree advantage {method!r}; choose one of {sorted(TREE_ADVANTAGE_METHODS)}")
    values = tree_values(parents, rewards)
    children = tree_children(parents)
    stds = [population_std([values[k] for k in kids]) if kids else None for kids in children]
    advantages: list[float | None] = []
    for node, parent in enumerate(parents):
        if parent is None:
            advantages.append(None)
            continue
        divisor = stds[parent] + STD_EPS if method == "grpo" else 1.0
        advantages.append((values[node] - values[parent]) / divisor)
    return values, advantages


def loss_mask(
    logp: Sequence[float],
    response_ids: Sequence[int],
    tau: float = 0.9,
    prob_mask: bool = True,
    train_on_eos: bool = True,
    eos_id: int | None = None,
) -> list[bool]:
    """Return which response tokens count in the loss: p < tau under the probability mask (rule 2), and
    not a final EOS when `train_on_eos` is false (rule 7; the reference never trains on it).

    Args:
        logp: (T,) log-probs of the response tokens at the sampling temperature.
        response_ids: (T,) the response token ids.

    >>> import math
    >>> loss_mask([math.log(0.5), math.log(0.95), math.log(0.2)], [7, 8, 2], train_on_eos=False, eos_id=2)
    [True, False, False]
    """
    if len(logp) != len(response_ids):
        raise ValueError(f"logp has {len(logp)} tokens, response_ids {len(response_ids)}: expected equal lengths")
    probs = np.exp(np.asarray(logp, dtype=np.float64))
    mask = probs < tau if prob_mask else np.ones(len(probs), dtype=bool)
    if not train_on_eos and len(response_ids) and response_ids[-1] == eos_id:
        mask[-1] = False
    return mask.tolist()
