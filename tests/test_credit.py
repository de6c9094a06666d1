"""The credit-assignment probe: first wrong tokens, the split of the blame, the stage's rows and counters."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spo.credit import STOP, credit_split, first_wrong_token, net_credit
from spo.policy.tiny import build_char_tokenizer
from spo.tasks import make_task
from stages.credit import credit_counters, credit_rows


def test_first_wrong_token_hand_cases():
    target = " 27+82=109; 109+18=127. #### 127"
    pieces = list(target) + [STOP]
    assert first_wrong_token(pieces, target) is None  # the whole target, then stop
    wrong = list(" 27+82=119; 119+18=137. #### 137") + [STOP]
    assert first_wrong_token(wrong, target) == 8  # " 27+82=1" matches, the "1" of "119" is wrong
    assert first_wrong_token(list(" 27+82=109") + [STOP], target) == 10  # stopped early
    assert first_wrong_token(list(target) + ["."], target) == len(target)  # went on instead of stopping
    assert first_wrong_token(list(" 27+82=10"), target) is None  # cut short but right so far
    assert first_wrong_token([" 27", "+8", "3"], target) == 2  # multi-character pieces
    assert first_wrong_token([], target) is None


@given(st.text(alphabet="0123+=; .#", max_size=20), st.text(alphabet="0123+=; .#", max_size=20))
def test_first_wrong_token_is_where_the_texts_part(response, target):
    index = first_wrong_token(list(response), target)
    common = next((i for i, (a, b) in enumerate(zip(response, target)) if a != b), min(len(response), len(target)))
    if common < len(response):
        assert index == common  # the first differing character, or the first one past the target's end
    else:
        assert index is None  # the response is a prefix of the target


def test_credit_split_hand_case():
    # tokens 0..3 of a rollout, first wrong token at 2: blame 0.5 + 0.5 before, 1.0 on it, 0.25 after;
    # positive advantages are no blame
    split = credit_split([-0.5, -0.5, -1.0, -0.25, 2.0], [True, False, True, True, True], offset=0, first_wrong=2)
    assert (split.negative, split.on_first_wrong, split.on_correct, split.after) == (2.25, 1.0, 1.0, 0.25)
    assert (split.correct_sum, split.correct_count) == (-0.5, 1)  # only trained correct tokens are averaged


def test_credit_split_of_tree_edges_uses_path_positions():
    # an edge whose segment starts at path position 10: an error at 12 lies inside it, one at 4 before it
    inside = credit_split([-1.0, -1.0, -1.0], [True] * 3, offset=10, first_wrong=12)
    assert (inside.on_correct, inside.on_first_wrong, inside.after) == (2.0, 1.0, 0.0)
    before = credit_split([-1.0, -1.0], [True] * 2, offset=10, first_wrong=4)
    assert (before.on_correct, before.on_first_wrong, before.after, before.correct_count) == (0.0, 0.0, 2.0, 0)
    clean = credit_split([-1.0, -1.0], [True] * 2, offset=10, first_wrong=None)
    assert clean.on_correct == 2.0 and clean.correct_count == 0  # no error on the path: correct, not averaged


@given(st.lists(st.floats(-3, 3), min_size=1, max_size=30), st.data())
def test_credit_split_parts_add_up(advantages, data):
    mask = data.draw(st.lists(st.booleans(), min_size=len(advantages), max_size=len(advantages)))
    wrong = data.draw(st.one_of(st.none(), st.integers(-5, 40)))
    split = credit_split(advantages, mask, offset=0, first_wrong=wrong)
    assert math.isclose(split.on_first_wrong + split.on_correct + split.after, split.negative, abs_tol=1e-9)
    assert split.negative == pytest.approx(sum(max(-a, 0.0) for a in advantages))


def test_net_credit_cancels_a_prefix_that_succeeds_as_often_as_it_fails():
    # GRPO on one prompt: four rollouts share the correct " 1+2=", two finish right, two go wrong at 5 and 6
    responses = [[1, 2, 3, 4, 5, 9], [1, 2, 3, 4, 5, 9], [1, 2, 3, 4, 6, 7], [1, 2, 3, 4, 5, 8]]
    advantages = [[1.0] * 6, [1.0] * 6, [-1.0] * 6, [-1.0] * 6]
    net = net_credit(responses, advantages, [None, None, 4, 5])
    assert net.on_correct == 0.0  # the shared prefix nets to 0; " 1+2=5" nets +1 (two right, one wrong)
    assert (net.on_first_wrong, net.after, net.negative) == (2.0, 1.0, 3.0)  # 6 and 8 once each, 7 after 6
    assert (net.correct_sum, net.correct_count) == (1.0, 1)  # the pair "5" on the failed path of rollout 4
    per_episode = credit_split(advantages[2], [True] * 6, offset=0, first_wrong=4)
    assert per_episode.on_correct == 4.0  # where the per-episode split blames the shared prefix


@given(st.lists(st.lists(st.floats(-3, 3), min_size=1, max_size=8), min_size=1, max_size=6), st.data())
def test_net_credit_without_shared_prefixes_is_the_episode_split(advantages, data):
    responses = [[index, *range(len(a) - 1)] for index, a in enumerate(advantages)]  # distinct first tokens
    wrong = [data.draw(st.one_of(st.none(), st.integers(0, len(a)))) for a in advantages]
    net = net_credit(responses, advantages, wrong)
    splits = [credit_split(a, [True] * len(a), offset=0, first_wrong=w) for a, w in zip(advantages, wrong)]
    for field in ("negative", "on_first_wrong", "on_correct", "after"):
        assert getattr(net, field) == pytest.approx(sum(getattr(s, field) for s in splits))


@pytest.fixture(scope="module")
def arith():
    task = make_task("arith", n_train=50, n_test=10)
    tokenizer = build_char_tokenizer(task.corpus("train"))
    return task, tokenizer


def _episode(task, tokenizer, example, response: str, advantages, episode_id=0, earlier: str = "", stop=True):
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = encode(response) + ([tokenizer.eos_token_id] if stop else [])
    advantages = advantages if isinstance(advantages, list) else [advantages] * len(response_ids)
    return {"episode_id": episode_id, "question_id": example.id, "kind": "tree_edge" if earlier else "rollout",
            "prompt_ids": encode(task.prompt(example)) + encode(earlier), "response_ids": response_ids,
            "advantages": advantages, "mask": [a != 0.0 for a in advantages],
            "old_logp": [math.log(0.5)] * len(response_ids)}


def test_credit_rows_on_arith_episodes(arith):
    task, tokenizer = arith
    example = task.examples("train")[0]
    target = task.target(example)
    wrong_at = target.index("=") + 1  # the first digit of the first sum
    digit = target[wrong_at]
    wrong = target[:wrong_at] + ("1" if digit != "1" else "2") + target[wrong_at + 1:]
    grpo = _episode(task, tokenizer, example, wrong, -1.0)  # GRPO: one advantage on every token
    spo = [0.0] * (len(wrong) + 1)
    spo[wrong_at] = -1.0  # SPO at its best: all the blame on the first wrong token
    right = _episode(task, tokenizer, example, target, 1.0, episode_id=2)
    rows = credit_rows([grpo, _episode(task, tokenizer, example, wrong, spo, episode_id=1), right], task, tokenizer)
    assert [r["first_wrong"] for r in rows] == [wrong_at, wrong_at, None]
    assert rows[0]["on_first_wrong"] == 1.0 and rows[0]["on_correct"] == wrong_at
    assert rows[0]["correct_advantage_sum"] == -wrong_at and rows[0]["correct_trained"] == wrong_at
    assert rows[1]["on_first_wrong"] == 1.0 and rows[1]["negative_mass"] == 1.0
    assert rows[2]["negative_mass"] == 0.0
    counters = credit_counters(rows, tau=0.9)
    total = len(wrong) + 1 + 1  # GRPO's blame on every token and the stop token, plus SPO's one token
    assert counters["credit/negative_share_first_wrong"] == pytest.approx(2 / total)
    assert counters["credit/negative_share_correct"] == pytest.approx(wrong_at / total)
    assert counters["credit/first_wrong_episodes"] == 2
    assert counters["credit/first_wrong_trained_share"] == 1.0  # both put a trained advantage on it
    assert counters["credit/first_wrong_confident_share"] == 0.0  # p = 0.5 < tau


def test_credit_rows_of_a_tree_edge_below_the_error(arith):
    task, tokenizer = arith
    example = task.examples("train")[1]
    target = task.target(example)
    earlier = "9" + target[1:6]  # the first segment was already wrong at path position 0
    edge = _episode(task, tokenizer, example, target[6:], -1.0, earlier=earlier)
    (row,) = credit_rows([edge], task, tokenizer)
    assert row["path_offset"] == len(earlier) and row["first_wrong"] == 0
    assert row["after_first_wrong"] == row["negative_mass"] > 0 and row["first_wrong_prob"] is None


def test_credit_rows_refuse_tasks_without_a_unique_target(arith, shared_data):
    _, tokenizer = arith
    gsm8k = make_task("gsm8k", path=shared_data / "gsm8k")
    with pytest.raises(ValueError, match="no unique target response"):
        credit_rows([], gsm8k, tokenizer)
