"""Tests for spo/advantages.py: paper figures, reference edge cases, and advantage invariants."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spo.advantages import (
    ADVANTAGES,
    ChainRollout,
    advantage_method,
    chain_token_advantages,
    exact_mean,
    gae_advantages,
    grpo_advantages,
    loss_mask,
    population_std,
    rloo_advantages,
    segment_advantages,
    tree_values,
    tree_values_and_advantages,
)
from spo.segments import cutpoint_boundaries

TAU = 0.9
probs_lists = st.lists(st.sampled_from([0.05, 0.3, 0.5, 0.89, TAU, 0.95, 1.0]), min_size=1, max_size=40)
reward_values = st.sampled_from([-2.0, 0.0, 1.0])  # what the reward function returns (docs/design.md#grading)
unit_values = st.floats(-2.0, 1.0, allow_nan=False)


# --- chain: Figure 2(a) and docs/design.md#chain-advantages -------------------------------------------------


def test_figure2a_style_chain_from_the_prompt():
    # Fig. 2(a) draws the first boundary at the prompt with V = 2/3. Add one inner boundary at
    # token 3 with V = 1/3 and a correct answer (reward 1):
    # segment [0, 3): 1/3 - 2/3 = -1/3;  segment [3, 6): 1 - 1/3 = 2/3; mask zeroes p >= 0.9.
    probs = [0.5, 0.95, 0.6, 0.2, 0.99, 0.8]
    adv = chain_token_advantages(probs, [0, 3], [2 / 3, 1 / 3], reward=1.0)
    assert adv == pytest.approx([-1 / 3, 0.0, -1 / 3, 2 / 3, 0.0, 2 / 3])


def test_tokens_before_the_first_boundary_get_zero():
    # boundary 2 (V = 0.5), reward 0: [2, 4) gets 0 - 0.5; tokens 0, 1 have no start value -> 0
    adv = chain_token_advantages([0.95, 0.99, 0.3, 0.4], [2], [0.5], reward=0.0)
    assert adv == [0.0, 0.0, -0.5, -0.5]


def test_single_cut_at_the_prompt_gives_reward_minus_prompt_value():
    # docs/design.md#chain-advantages: only cut -1 (our boundary 0) -> A = score - V(prompt) = 1 - 0.25 on low-prob tokens
    adv = chain_token_advantages([0.2, 0.95, 0.5], [0], [0.25], reward=1.0)
    assert adv == [0.75, 0.0, 0.75]


def test_no_boundaries_gives_all_zero():
    assert chain_token_advantages([0.2, 0.5], [], [], reward=1.0, prob_mask=False) == [0.0, 0.0]


def test_p_equal_to_tau_is_outside_the_mask():
    # one segment from the prompt, A = 1 - 0 = 1; p = 0.9 is not < 0.9, so it gets 0
    adv = chain_token_advantages([0.9, 0.8999, 0.9], [0], [0.0], reward=1.0, tau=0.9)
    assert adv == [0.0, 1.0, 0.0]


def test_without_prob_mask_every_segment_token_gets_its_advantage():
    adv = chain_token_advantages([0.99, 0.2, 0.99], [1], [0.5], reward=1.0, prob_mask=False)
    assert adv == [0.0, 0.5, 0.5]


def test_boundary_at_the_end_gives_an_empty_last_segment():
    # a boundary after the last token (context guard, docs/design.md#context-guard): [0, 2) gets 0.75 - 0.5, nothing gets 1 - 0.75
    adv = chain_token_advantages([0.2, 0.2], [0, 2], [0.5, 0.75], reward=1.0)
    assert adv == [0.25, 0.25]


def test_chain_input_errors():
    with pytest.raises(ValueError, match=r"values: expected one per boundary \(2\), got 1"):
        chain_token_advantages([0.5, 0.5, 0.5], [0, 2], [0.5], reward=1.0)
    with pytest.raises(ValueError, match="boundaries: expected strictly increasing"):
        chain_token_advantages([0.5, 0.5], [1, 0], [0.5, 0.5], reward=1.0)
    with pytest.raises(ValueError, match="values: expected finite"):
        chain_token_advantages([0.5], [0], [math.nan], reward=1.0)


def reference_chain_oracle(probs, boundaries, values, reward, tau):
    """Plain-loop transcription of docs/design.md#chain-advantages (cuts c = b - 1), with our p >= tau mask."""
    length = len(probs)
    if not boundaries:
        return [0.0] * length
    value_at = {length - 1: reward}  # value[L-1] = score
    cuts, cut_values = [b - 1 for b in boundaries], list(values)
    base = None
    if cuts[0] == -1:
        base = cut_values[0]
        cuts, cut_values = cuts[1:], cut_values[1:]
    for c, v in zip(cuts, cut_values):
        if c != length - 1:  # a cut after the last token: the score wins at L-1 (empty last segment)
            value_at[c] = v
    adv_at = {}
    for t in range(length):
        if t in value_at:
            adv_at[t] = 0.0 if base is None else value_at[t] - base
            base = value_at[t]
    adv, right = [0.0] * length, 0.0
    for t in reversed(range(length)):  # fill backwards from the next defined position
        right = adv_at.get(t, right)
        adv[t] = right
    return [0.0 if p >= tau else a for p, a in zip(probs, adv)]


@given(probs_lists, st.integers(1, 5), st.data())
def test_chain_matches_the_reference_walk(probs, interval, data):
    boundaries = cutpoint_boundaries(probs, tau=TAU, interval=interval)
    values = data.draw(st.lists(unit_values, min_size=len(boundaries), max_size=len(boundaries)))
    reward = data.draw(reward_values)
    ours = chain_token_advantages(probs, boundaries, values, reward, tau=TAU)
    assert ours == pytest.approx(reference_chain_oracle(probs, boundaries, values, reward, TAU), abs=1e-12)


@given(probs_lists, st.integers(1, 5), reward_values, st.data())
def test_chain_mask_is_exactly_p_below_tau(probs, interval, reward, data):
    boundaries = cutpoint_boundaries(probs, tau=TAU, interval=interval)
    values = data.draw(st.lists(unit_values, min_size=len(boundaries), max_size=len(boundaries)))
    masked = chain_token_advantages(probs, boundaries, values, reward, tau=TAU)
    unmasked = chain_token_advantages(probs, boundaries, values, reward, tau=TAU, prob_mask=False)
    assert masked == [a if p < TAU else 0.0 for p, a in zip(probs, unmasked)]


@given(probs_lists, st.integers(1, 5), reward_values)
def test_values_equal_to_the_reward_give_zero_advantages(probs, interval, reward):
    boundaries = cutpoint_boundaries(probs, tau=TAU, interval=interval)
    adv = chain_token_advantages(probs, boundaries, [reward] * len(boundaries), reward, prob_mask=False)
    assert adv == [0.0] * len(probs)


@given(
    st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))),
    reward_values,
    st.data(),
)
def test_segment_advantages_telescope(length_and_boundaries, reward, data):
    length, boundary_set = length_and_boundaries
    boundaries = sorted(boundary_set)
    values = data.draw(st.lists(unit_values, min_size=len(boundaries), max_size=len(boundaries)))
    adv = chain_token_advantages([0.5] * length, boundaries, values, reward, prob_mask=False)
    # each segment's advantage read once, at its first token, sums to reward - V(first boundary)
    assert sum(adv[b] for b in boundaries) == pytest.approx(reward - values[0], abs=1e-12)
    assert sum(segment_advantages(values, reward)) == pytest.approx(reward - values[0], abs=1e-12)


# --- group baselines (docs/design.md#baselines) ------------------------------------------------------------


def test_grpo_and_rloo_hand_cases():
    # grpo [1, 0, 0, 1]: mean 0.5, population std 0.5 -> +-0.5 / (0.5 + 1e-8) = +-1
    assert grpo_advantages([1.0, 0.0, 0.0, 1.0]) == pytest.approx([1, -1, -1, 1], abs=1e-7)
    # rloo [1, 0, 0, 0]: 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3
    assert rloo_advantages([1.0, 0.0, 0.0, 0.0]) == pytest.approx([1, -1 / 3, -1 / 3, -1 / 3])
    # grpo divides by std + 1e-8: [-2, 1]: mean -0.5, std 1.5 -> +-1.5 / 1.5
    assert grpo_advantages([-2.0, 1.0]) == pytest.approx([-1.0, 1.0], abs=1e-7)


@pytest.mark.parametrize("method", [grpo_advantages, rloo_advantages])
@pytest.mark.parametrize("group", [[1.0] * 8, [0.0] * 8, [0.1] * 3, [1 / 3] * 7, [0.7]])
def test_all_equal_groups_give_exactly_zero(method, group):
    # (0.1 + 0.1 + 0.1) / 3 = 0.10000000000000002 != 0.1: a naive mean leaves -1.4e-9 after grpo
    assert method(group) == [0.0] * len(group)


def rollouts(rewards, length=3):
    return [ChainRollout([0.5] * length, r) for r in rewards]


def test_group_methods_put_one_advantage_on_every_token():
    advantages = ADVANTAGES["rloo"].chain(rollouts([1.0, 0.0], length=2), tau=0.9, prob_mask=False)
    assert advantages == [[1.0, 1.0], [-1.0, -1.0]]


def test_group_std_off_leaves_the_reward_minus_the_group_mean():
    # rewards 1, 0, 0, 0: mean 1/4, population std sqrt(3)/4 = 0.4330
    group = rollouts([1.0, 0.0, 0.0, 0.0], length=2)
    with_std = ADVANTAGES["grpo"].chain(group, tau=0.9, prob_mask=False, group_std=True)
    without = ADVANTAGES["grpo"].chain(group, tau=0.9, prob_mask=False, group_std=False)
    assert [a[0] for a in with_std] == pytest.approx([0.75 / 0.4330127, -0.25 / 0.4330127, -0.25 / 0.4330127,
                                                      -0.25 / 0.4330127])
    assert without == [[0.75, 0.75], [-0.25, -0.25], [-0.25, -0.25], [-0.25, -0.25]]  # Dr. GRPO: r - mean
    assert ADVANTAGES["grpo"].group_std and not any(m.group_std for n, m in ADVANTAGES.items() if n != "grpo")


def test_group_errors():
    with pytest.raises(ValueError, match=r"unknown advantage method 'ppo'; choose one of \['gae', 'grpo', 'rloo', "
                                         r"'segment', 'tree', 'tree-normalized'\]"):
        advantage_method("ppo", "spo-chain")
    with pytest.raises(ValueError, match="works on spo-tree samples, not spo-chain"):
        advantage_method("tree", "spo-chain")
    with pytest.raises(ValueError, match="non-empty group"):
        ADVANTAGES["grpo"].chain([], tau=0.9, prob_mask=False)
    with pytest.raises(ValueError, match="rewards: expected finite"):
        ADVANTAGES["rloo"].chain(rollouts([1.0, math.inf]), tau=0.9, prob_mask=False)


@given(st.lists(unit_values, min_size=2, max_size=16))
def test_rloo_matches_the_leave_one_out_loop(group):
    oracle = [s - sum(group[:i] + group[i + 1 :]) / (len(group) - 1) for i, s in enumerate(group)]
    assert rloo_advantages(group) == pytest.approx(oracle, abs=1e-12)
    assert sum(grpo_advantages(group)) == pytest.approx(0.0, abs=1e-6)


# --- tree: Figure 2(b), docs/design.md#tree-values ---------------------------------------------------------

# Figure 2(b): P has children a (leaf, reward 1), b (children rewards 1, 1, 0), c (children 0, 0, 0).
#   node:    P     a    b     c     b1   b2   b3   c1   c2   c3
FIG2B_PARENTS = [None, 0, 0, 0, 2, 2, 2, 3, 3, 3]
FIG2B_REWARDS = [None, 1.0, None, None, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_figure2b_values_and_tree_advantages():
    values, adv = tree_values_and_advantages(FIG2B_PARENTS, FIG2B_REWARDS, method="tree")
    # V(b) = (1 + 1 + 0)/3 = 2/3, V(c) = 0, V(P) = (1 + 2/3 + 0)/3 = 5/9
    assert values[:4] == pytest.approx([5 / 9, 1.0, 2 / 3, 0.0])
    # A(a) = 1 - 5/9 = 4/9, A(b) = 2/3 - 5/9 = 1/9, A(c) = 0 - 5/9; A(b1) = 1 - 2/3; c's children 0 exactly
    assert adv[0] is None
    assert adv[1:7] == pytest.approx([4 / 9, 1 / 9, -5 / 9, 1 / 3, 1 / 3, -2 / 3])
    assert adv[7:] == [0.0, 0.0, 0.0]  # an all-equal sibling group: exactly 0, dropped by docs/design.md#tree-values


def test_figure2b_tree_normalized_divides_by_the_parent_std():
    _, adv = tree_values_and_advantages(FIG2B_PARENTS, FIG2B_REWARDS, method="tree-normalized")
    # std of P's children (1, 2/3, 0) around 5/9: sqrt(((4/9)^2 + (1/9)^2 + (5/9)^2) / 3) = sqrt(14)/9
    std = math.sqrt(14) / 9
    assert adv[1] == pytest.approx((4 / 9) / (std + 1e-8))  # = 4 / sqrt(14) = 1.069
    assert adv[1] == pytest.approx(4 / math.sqrt(14), rel=1e-7)


def test_early_finishing_child_recursive_mean_differs_from_leaf_mean():
    # root -> a (finished early, reward 1) and b -> four leaves with reward 0
    parents = [None, 0, 0, 2, 2, 2, 2]
    rewards = [None, 1.0, None, 0.0, 0.0, 0.0, 0.0]
    values = tree_values(parents, rewards)
    # recursive: V(b) = 0, V(root) = (1 + 0)/2 = 0.5; the mean over the 5 leaves would be 1/5
    assert values[0] == 0.5 and values[0] != pytest.approx(1 / 5)


def test_tree_single_child_gives_zero_advantage():
    _, adv = tree_values_and_advantages([None, 0], [None, 1.0], method="tree-normalized")
    assert adv == [None, 0.0]  # (1 - 1) / (0 + 1e-8)


@pytest.mark.parametrize(
    ("parents", "rewards", "message"),
    [
        ([None, None], [1.0, 1.0], r"exactly one root \(None\), got roots \[0, 1\]"),
        ([1, 0], [None, None], r"exactly one root \(None\), got roots \[\]"),
        ([None, 5], [None, 1.0], r"parents\[1\]: expected another node's index in \[0, 2\), got 5"),
        ([None, 1], [None, 1.0], r"parents\[1\]: expected another node's index"),
        ([None, 0, 3, 2], [None, 1.0, None, None], r"nodes \[2, 3\] are not reachable from root 0"),
        ([None, 0, 0], [None, 1.0, None], r"rewards\[2\]: node 2 is a leaf, expected a float reward"),
        ([None, 0], [0.5, 1.0], r"rewards\[0\]: node 0 has children \[1\], expected None, got 0.5"),
        ([None, 0], [None], r"rewards: expected 2 \(one per node\), got 1"),
    ],
)
def test_tree_errors_name_the_node(parents, rewards, message):
    with pytest.raises(ValueError, match=message):
        tree_values_and_advantages(parents, rewards)


def test_tree_unknown_method_raises():
    with pytest.raises(ValueError, match=r"unknown advantage method 'ppo'"):
        tree_values_and_advantages([None, 0], [None, 1.0], method="ppo")
    with pytest.raises(ValueError, match="works on spo-chain samples, not spo-tree"):
        tree_values_and_advantages([None, 0], [None, 1.0], method="grpo")


@st.composite
def trees(draw):
    """A random tree (node i > 0 hangs under an earlier node), leaves rewarded, nodes then shuffled."""
    n = draw(st.integers(1, 30))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    is_inner = {p for p in parents if p is not None}
    rewards = [None if i in is_inner else draw(reward_values) for i in range(n)]
    order = draw(st.permutations(range(n)))
    new_index = {old: new for new, old in enumerate(order)}
    shuffled_parents = [None if parents[old] is None else new_index[parents[old]] for old in order]
    return parents, rewards, shuffled_parents, [rewards[old] for old in order], order


def recursive_value(node, parents, rewards):
    kids = [i for i, p in enumerate(parents) if p == node]
    if not kids:
        return rewards[node]
    return sum(recursive_value(k, parents, rewards) for k in kids) / len(kids)


@given(trees(), st.sampled_from(["tree", "tree-normalized"]))
def test_tree_matches_recursion_and_is_order_free(tree, method):
    parents, rewards, shuffled_parents, shuffled_rewards, order = tree
    values, adv = tree_values_and_advantages(parents, rewards, method=method)
    assert values == pytest.approx([recursive_value(i, parents, rewards) for i in range(len(parents))])
    shuffled_values, shuffled_adv = tree_values_and_advantages(
        shuffled_parents, shuffled_rewards, method=method
    )
    assert shuffled_values == [values[old] for old in order]
    assert shuffled_adv == [adv[old] for old in order]
    for node in range(len(parents)):  # rloo: each sibling group's advantages sum to 0
        siblings = [i for i, p in enumerate(parents) if p == node]
        if siblings and method == "tree":
            assert sum(adv[i] for i in siblings) == pytest.approx(0.0, abs=1e-9)


def test_exact_mean_and_std_on_equal_members():
    group = [1 / 3] * 7
    assert exact_mean(group) == 1 / 3 and population_std(group) == 0.0
    rng = random.Random(0)
    random_group = [rng.random() for _ in range(5)]
    assert exact_mean(random_group) == pytest.approx(sum(random_group) / 5)


# --- the loss mask (docs/design.md#threshold, #stop-token) -----------------------------------------


def test_loss_mask_excludes_a_token_exactly_at_tau():
    tau = 0.5
    at, below = math.log(tau), math.log(math.nextafter(tau, 0.0))
    assert math.exp(at) == tau and math.exp(below) < tau  # both round-trip through exp exactly
    assert loss_mask([at, below, 0.0], [4, 5, 6], tau=tau) == [False, True, False]  # p < tau, strictly
    assert loss_mask([at, below, 0.0], [4, 5, 6], tau=tau, prob_mask=False) == [True, True, True]


def test_the_mask_is_exactly_the_cutpoints_and_the_nonzero_chain_advantages():
    tau, probs = 0.5, [0.5, math.nextafter(0.5, 0.0), 0.9, 0.2]
    mask = loss_mask([math.log(p) for p in probs], [1, 2, 3, 4], tau=tau)
    cut = cutpoint_boundaries(probs, tau=tau, interval=1)
    advantages = chain_token_advantages(probs, [0], [0.0], reward=1.0, tau=tau)
    assert [i for i, m in enumerate(mask) if m] == cut == [i for i, a in enumerate(advantages) if a] == [1, 3]


def test_loss_mask_drops_only_a_final_stop_token():
    eos = 2
    logp = [math.log(0.5)] * 3
    assert loss_mask(logp, [7, 2, 2], train_on_eos=False, eos_id=eos) == [True, True, False]  # only the last
    assert loss_mask(logp, [7, 8, 2], train_on_eos=True, eos_id=eos) == [True, True, True]
    assert loss_mask(logp, [7, 8, 9], train_on_eos=False, eos_id=eos) == [True, True, True]  # cut, no EOS



# --- GAE (PPO with a critic) -------------------------------------------------------------------------


def gae_loop(values, reward, gamma, lam):
    """The textbook double sum: A_t = sum_k (gamma lam)^k delta_t+k, rewards only at the end, terminal 0."""
    T = len(values)
    rewards = [0.0] * (T - 1) + [reward]
    nxt = [*values[1:], 0.0]
    deltas = [rewards[t] + gamma * nxt[t] - values[t] for t in range(T)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t)) for t in range(T)]


@given(st.lists(unit_values, min_size=1, max_size=30), reward_values, st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_the_double_sum(values, reward, gamma, lam):
    assert gae_advantages(values, reward, gamma, lam) == pytest.approx(gae_loop(values, reward, gamma, lam), abs=1e-9)


@given(st.lists(unit_values, min_size=1, max_size=30), reward_values)
def test_gae_with_gamma_and_lambda_one_is_reward_minus_value(values, reward):
    assert gae_advantages(values, reward) == pytest.approx([reward - v for v in values], abs=1e-12)


def test_gae_hand_case_and_errors():
    # V = 0.2, 0.6; reward 1; gamma 0.5, lam 0.5: delta_1 = 1 - 0.6 = 0.4, delta_0 = 0.5 * 0.6 - 0.2 = 0.1;
    # A_1 = 0.4, A_0 = 0.1 + 0.25 * 0.4 = 0.2
    assert gae_advantages([0.2, 0.6], 1.0, gamma=0.5, lam=0.5) == pytest.approx([0.2, 0.4])
    assert gae_advantages([], 1.0) == []
    with pytest.raises(ValueError, match="values: expected finite"):
        gae_advantages([math.nan], 1.0)
    assert ADVANTAGES["gae"].chain([ChainRollout([0.5, 0.5], 1.0, token_values=[0.25, 0.5])], gamma=1.0, lam=1.0,
                                   tau=0.9, prob_mask=True) == [[0.75, 0.5]]
