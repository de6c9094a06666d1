"""Advantages: SPO-chain token advantages, GRPO/RLOO group advantages, SPO-tree edge advantages.

Plain floats in and out. Means and stds of a group whose members are all equal are exact (the
member itself, 0.0), so all-equal groups give advantages of exactly 0.0: float round-off such as
``(0.1 + 0.1 + 0.1) / 3 != 0.1`` would otherwise leave 1e-17 advantages that survive the
"drop edges with advantage exactly 0" rule (docs/design.md#tree-values) and are blown up by grpo's
division by ``std + 1e-8``.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

from spo.segments import validate_boundaries

STD_EPS = 1e-8
"""Added to the std in every grpo division, as the reference (docs/design.md#tree-values)."""


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
    """Return each response token's SPO-chain advantage (docs/design.md#chain-advantages, docs/design.md#threshold).

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
    import numpy as np  # here, not at the top: the config reads `ADVANTAGES` without numpy

    advantages = np.zeros(length)  # (T,)
    if boundaries:
        seg_lengths = np.diff([*boundaries, length])  # (S,)
        advantages[boundaries[0] :] = np.repeat(segment_advantages(values, reward), seg_lengths)
    if prob_mask:
        advantages[~(np.asarray(probs, dtype=float) < tau)] = 0.0
    return advantages.tolist()


def gae_advantages(values: Sequence[float], reward: float, gamma: float = 1.0, lam: float = 1.0) -> list[float]:
    """Return generalised advantage estimates of one response's tokens (PPO with a critic).

    Token t is taken in state s_t (the prompt and the first t response tokens), whose value is
    ``values[t]``; the only reward comes with the last token and the state after it is terminal
    (value 0). ``delta_t = r_t + gamma V(s_t+1) - V(s_t)`` and ``A_t = delta_t + gamma lam A_t+1``.
    With gamma = lam = 1 (the reference's PPO) this telescopes to ``reward - values[t]``.

    Args:
        values: (T,) the critic's value of the state before each response token.
        reward: the response's reward, given with its last token.
        gamma: discount; lam: the GAE lambda.

    >>> gae_advantages([0.5, 0.25, 0.75], reward=1.0)  # reward - V(s_t)
    [0.5, 0.75, 0.25]
    >>> [round(a, 4) for a in gae_advantages([0.5, 0.25, 0.75], reward=1.0, lam=0.0)]  # one-step TD errors
    [-0.25, 0.5, 0.25]
    """
    _check_finite("values", [*values, reward])
    advantages, running = [0.0] * len(values), 0.0
    for t in reversed(range(len(values))):
        last = t == len(values) - 1
        delta = (reward if last else 0.0) + (0.0 if last else gamma * values[t + 1]) - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def grpo_advantages(rewards: Sequence[float], group_std: bool = True, **_) -> list[float]:
    """Return ``(s - mean) / (population std + 1e-8)`` for each member of one group (docs/design.md#baselines),
    or ``s - mean`` without ``group_std`` (Dr. GRPO, docs/design.md#policy-loss-choices).

    >>> [round(a, 6) for a in grpo_advantages([1.0, 0.0])]  # mean 0.5, std 0.5: +-0.5 / (0.5 + 1e-8)
    [1.0, -1.0]
    >>> grpo_advantages([1.0, 0.0], group_std=False)
    [0.5, -0.5]
    """
    mean = exact_mean(rewards)
    if not group_std:
        return [s - mean for s in rewards]
    std = population_std(rewards)
    return [(s - mean) / (std + STD_EPS) for s in rewards]


def rloo_advantages(rewards: Sequence[float], **_) -> list[float]:
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

    The recursive mean (docs/design.md#tree-values) differs from the mean over all leaves below a node when
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


def tree_values_and_advantages(
    parents: Sequence[int | None], rewards: Sequence[float | None], method: str = "tree"
) -> tuple[list[float], list[float | None]]:
    """Return node values and edge advantages of one SPO-tree (docs/design.md#tree-values).

    A non-root node's advantage is ``V(node) - V(parent)`` ("tree") or that divided by the
    population std of the parent's children values + 1e-8 ("tree-normalized"). The root has no
    edge: its advantage is None.

    Args:
        parents: parent index of each node, None for the root; nodes in any order.
        rewards: a float for each leaf, None for each inner node.
        method: an `ADVANTAGES` entry of SPO-tree.

    >>> values, adv = tree_values_and_advantages([None, 0, 0], [None, 1.0, 0.0], method="tree-normalized")
    >>> values, [None if a is None else round(a, 6) for a in adv]  # V0 = 0.5, std 0.5, +-0.5 / 0.5
    ([0.5, 1.0, 0.0], [None, 1.0, -1.0])
    """
    edge = advantage_method(method, "spo-tree").edge
    values = tree_values(parents, rewards)
    children = tree_children(parents)
    stds = [population_std([values[k] for k in kids]) if kids else None for kids in children]
    advantages: list[float | None] = [
        None if parent is None else edge(values[node], values[parent], stds[parent])
        for node, parent in enumerate(parents)
    ]
    return values, advantages


class ChainRollout(NamedTuple):
    """What a chain advantage method sees of one rollout."""

    probs: Sequence[float]
    """(T,) token probabilities p."""
    reward: float
    boundaries: Sequence[int] = ()
    """(S,) boundaries (prefix lengths), for methods that read values at boundaries."""
    values: Sequence[float] = ()
    """(S,) V at each boundary."""
    token_values: Sequence[float] = ()
    """(T,) a critic's value of the state before each token, for methods that read a critic."""


def segment_group(group: Sequence[ChainRollout], *, tau: float, prob_mask: bool, **_) -> list[list[float]]:
    """SPO-chain: each rollout's segment advantages on its tokens (`chain_token_advantages`)."""
    return [chain_token_advantages(r.probs, r.boundaries, r.values, r.reward, tau, prob_mask) for r in group]


def gae_group(group: Sequence[ChainRollout], *, gamma: float, lam: float, **_) -> list[list[float]]:
    """PPO: each rollout's GAE from its critic values (`gae_advantages`)."""
    return [gae_advantages(r.token_values, r.reward, gamma, lam) for r in group]


def constant_group(per_rollout: Callable[..., list[float]]):
    """A baseline that gives every token of a rollout one advantage, from its group's rewards (and the
    keyword options, such as group_std, that `per_rollout` reads)."""

    def group_advantages(group: Sequence[ChainRollout], **options) -> list[list[float]]:
        if not group:
            raise ValueError("expected a non-empty group of rollouts, got none (spo/advantages.py)")
        rewards = [r.reward for r in group]
        _check_finite("rewards", rewards)
        return [[a] * len(r.probs) for r, a in zip(group, per_rollout(rewards, **options))]

    return group_advantages


def value_difference(value: float, parent_value: float, parent_std: float) -> float:
    """V(node) - V(parent): how much better the node is than its siblings on average."""
    return value - parent_value


def normalized_value_difference(value: float, parent_value: float, parent_std: float) -> float:
    """(V(node) - V(parent)) / (std of the siblings' values + 1e-8)."""
    return (value - parent_value) / (parent_std + STD_EPS)


@dataclass(frozen=True)
class AdvantageMethod:
    """How rewards and values become advantages (docs/design.md#baselines). `advantage.method` names one."""

    algorithm: str
    """The sampling it works on: "spo-chain" (rollouts) or "spo-tree" (tree edges)."""
    uses_values: bool = False
    """Reads MC values at boundaries, so the partition must cut the rollouts (not "none")."""
    uses_critic: bool = False
    """Reads a learned critic's value of every token's state (PPO)."""
    group_std: bool = False
    """Divides by its group's reward std, unless `advantage.group_std` is false (GRPO vs Dr. GRPO)."""
    chain: Callable[..., list[list[float]]] | None = None
    """spo-chain: (one question's rollouts, keyword tau, prob_mask, gamma, lam, group_std) -> each rollout's
    per-token advantages."""
    edge: Callable[[float, float, float], float] | None = None
    """spo-tree: (V(node), V(parent), std of the parent's children values) -> the edge's advantage."""
    reads: tuple[str, ...] = ()
    """Config fields its `chain` or `edge` reads that other methods do not (gae: gamma and lam)."""

    @property
    def fields(self) -> frozenset[str]:
        """The config fields and sections that only some methods read and this one does: its `reads`, the
        resample section where it reads MC values (only then does the resample stage run), the critic where it
        reads one, `advantage.group_std` where it divides by the group std. Set for a method that does not
        read it, such a field is refused (`spo.config.unread_fields`).

        >>> sorted(ADVANTAGES["gae"].fields), sorted(ADVANTAGES["rloo"].fields)
        (['advantage.gamma', 'advantage.lam', 'critic'], [])
        """
        return frozenset({*self.reads, *(["resample"] if self.uses_values else []),
                          *(["critic"] if self.uses_critic else []),
                          *(["advantage.group_std"] if self.group_std else [])})


ADVANTAGES: dict[str, AdvantageMethod] = {
    "segment": AdvantageMethod("spo-chain", uses_values=True, chain=segment_group),
    "grpo": AdvantageMethod("spo-chain", group_std=True, chain=constant_group(grpo_advantages)),
    "rloo": AdvantageMethod("spo-chain", chain=constant_group(rloo_advantages)),
    "gae": AdvantageMethod("spo-chain", uses_critic=True, chain=gae_group,
                           reads=("advantage.gamma", "advantage.lam")),
    "tree": AdvantageMethod("spo-tree", edge=value_difference),
    "tree-normalized": AdvantageMethod("spo-tree", edge=normalized_value_difference),
}
"""Advantage methods by config name. "tree" is the reference's tree "rloo" and "tree-normalized" its tree
"grpo" (neither is leave-one-out; docs/design.md#tree-values); "gae" is PPO's, from a learned critic
(docs/design.md#baselines)."""


def advantage_method(name: str, algorithm: str) -> AdvantageMethod:
    """The registered method `name`, checked to work on `algorithm`'s samples.

    >>> advantage_method("grpo", "spo-tree")
    Traceback (most recent call last):
    ...
    ValueError: advantage method 'grpo' works on spo-chain samples, not spo-tree; for spo-tree choose one of ['tree', 'tree-normalized']
    """
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage method {name!r}; choose one of {sorted(ADVANTAGES)}")
    method = ADVANTAGES[name]
    if method.algorithm != algorithm:
        raise ValueError(f"advantage method {name!r} works on {method.algorithm} samples, not {algorithm}; "
                         f"for {algorithm} choose one of {methods_for(algorithm)}")
    return method


def methods_for(algorithm: str) -> list[str]:
    """The registered advantage methods that work on `algorithm`'s samples, by name."""
    return sorted(n for n, m in ADVANTAGES.items() if m.algorithm == algorithm)


def policy_tokens(response_ids: Sequence[int], train_on_eos: bool, eos_id: int | None) -> int:
    """How many leading response tokens are the policy's decisions: all, or all but a final EOS when
    `train_on_eos` is false. The reference's responses have no EOS token, so it is never trained and never a
    cutpoint there (docs/design.md#stop-token).

    >>> policy_tokens([7, 8, 2], train_on_eos=False, eos_id=2), policy_tokens([7, 8, 2], True, 2)
    (2, 3)
    """
    return len(response_ids) - int(not train_on_eos and len(response_ids) > 0 and response_ids[-1] == eos_id)


def loss_mask(
    logp: Sequence[float],
    response_ids: Sequence[int],
    tau: float = 0.9,
    prob_mask: bool = True,
    train_on_eos: bool = True,
    eos_id: int | None = None,
) -> list[bool]:
    """Return which response tokens count in the loss: p < tau under the probability mask (docs/design.md#threshold), and
    not a final EOS when `train_on_eos` is false (docs/design.md#stop-token; the reference never trains on it).

    Args:
        logp: (T,) log-probs of the response tokens at the sampling temperature.
        response_ids: (T,) the response token ids.

    >>> import math
    >>> loss_mask([math.log(0.5), math.log(0.95), math.log(0.2)], [7, 8, 2], train_on_eos=False, eos_id=2)
    [True, False, False]
    """
    if len(logp) != len(response_ids):
        raise ValueError(f"logp has {len(logp)} tokens, response_ids {len(response_ids)}: expected equal lengths")
    import numpy as np  # as in `chain_token_advantages`

    probs = np.exp(np.asarray(logp, dtype=np.float64))
    mask = probs < tau if prob_mask else np.ones(len(probs), dtype=bool)
    mask[policy_tokens(response_ids, train_on_eos, eos_id):] = False
    return mask.tolist()
