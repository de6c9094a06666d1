"""Tests for spo/segments.py: hand-computed partitions, edge cases, and partition invariants."""

import dataclasses
import itertools
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spo.config import PartitionConfig
from spo.segments import (
    PARTITIONS,
    cutpoint_boundaries,
    fixed_count_boundaries,
    fixed_length_boundaries,
    partition_boundaries,
    segments,
    step_boundaries,
    validate_boundaries,
)

TAU = 0.9
# Probabilities drawn from a few values including tau itself, so p == tau is exercised often.
probs_lists = st.lists(st.sampled_from([0.05, 0.3, 0.5, 0.89, TAU, 0.95, 1.0]), max_size=40)


# --- cutpoint_boundaries: Figure 1 and docs/design.md#chain-advantages ---------------------------------------------


def test_figure1_boundary_before_every_interval_th_cutpoint():
    # index:       0     1    2     3    4     5    6    7     8    9    10    11
    probs = [0.99, 0.5, 0.2, 0.95, 0.1, 0.97, 0.3, 0.6, 0.92, 0.4, 0.99, 0.7]
    # cutpoints (p < 0.9) = [1, 2, 4, 6, 7, 9, 11]; every 3rd from the first: 1, 6, 11
    assert cutpoint_boundaries(probs, interval=3) == [1, 6, 11]
    # segments after the first start with a cutpoint and hold 3 cutpoints: (1,6) has 1,2,4;
    # (6,11) has 6,7,9; the last (11,12) has only 11.
    assert segments([1, 6, 11], len(probs)) == [(0, 1), (1, 6), (6, 11), (11, 12)]


def test_matches_reference_cut_indices():
    # The reference's cuts are c = i - 1 (docs/design.md#chain-partition) (state after token c); our boundary is prefix length c + 1 = i.
    probs = [0.95, 0.5, 0.5, 0.99, 0.1, 0.2, 0.3]
    low = [i for i, p in enumerate(probs) if p < 0.9]  # [1, 2, 4, 5, 6]
    reference_cuts = [i - 1 for i in low][::2]  # [0, 3, 5]
    assert cutpoint_boundaries(probs, interval=2) == [c + 1 for c in reference_cuts] == [1, 4, 6]


def test_no_cutpoint_gives_no_boundary():
    assert cutpoint_boundaries([0.95, 0.99, 1.0]) == []
    assert cutpoint_boundaries([]) == []


def test_first_token_cutpoint_gives_boundary_at_prompt():
    # token 0 has p = 0.4 < 0.9: the reference's cut -1, the bare prompt, prefix length 0
    assert cutpoint_boundaries([0.4, 0.99, 0.5], interval=5) == [0]


def test_p_equal_to_tau_is_not_a_cutpoint():
    # 0.9 < 0.9 is false; 0.8999 < 0.9 is true
    assert cutpoint_boundaries([0.9, 0.9, 0.8999], tau=0.9, interval=1) == [2]


def test_max_boundaries_keeps_the_earliest():
    probs = [0.5] * 10  # every token a cutpoint; interval 2 -> 0, 2, 4, 6, 8
    assert cutpoint_boundaries(probs, interval=2) == [0, 2, 4, 6, 8]
    assert cutpoint_boundaries(probs, interval=2, max_boundaries=2) == [0, 2]
    assert cutpoint_boundaries(probs, interval=2, max_boundaries=0) == cutpoint_boundaries(probs, interval=2)  # 0: no cap


@pytest.mark.parametrize("bad", [[0.5, math.nan], [1.5], [-0.1]])
def test_probs_outside_unit_interval_raise(bad):
    with pytest.raises(ValueError, match="probs: expected values in"):
        cutpoint_boundaries(bad)


def test_bad_interval_and_cap_raise():
    with pytest.raises(ValueError, match="interval"):
        cutpoint_boundaries([0.5], interval=0)
    with pytest.raises(ValueError, match="max_boundaries"):
        cutpoint_boundaries([0.5], max_boundaries=-1)


@given(probs_lists, st.integers(1, 7), st.one_of(st.none(), st.integers(0, 5)))
def test_cutpoint_segments_hold_interval_cutpoints(probs, interval, cap):
    boundaries = cutpoint_boundaries(probs, tau=TAU, interval=interval, max_boundaries=cap)
    cutpoints = [i for i, p in enumerate(probs) if p < TAU]
    expected_count = math.ceil(len(cutpoints) / interval)
    assert len(boundaries) == (expected_count if not cap else min(cap, expected_count))
    assert all(probs[b] < TAU for b in boundaries)  # a boundary sits just before a cutpoint
    if boundaries:
        assert all(p >= TAU for p in probs[: boundaries[0]])  # nothing low-prob before the first
        inner = itertools.pairwise(boundaries)
        assert all(sum(p < TAU for p in probs[a:b]) == interval for a, b in inner)


# --- fixed partitions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (10, [3, 6, 8]),  # 10 = 3 + 3 + 2 + 2 (10 % 4 = 2 longer chunks)
        (8, [2, 4, 6]),  # 2 + 2 + 2 + 2
        (4, [1, 2, 3]),
        (3, [1, 2]),  # 1 + 1 + 1 + 0: the empty chunk ends at 3 = length
        (1, []),
        (0, []),
    ],
)
def test_fixed_count_hand_cases(length, expected):
    assert fixed_count_boundaries(length, n_segments=4) == expected


@given(st.integers(0, 200), st.integers(1, 9))
def test_fixed_count_chunks_differ_by_at_most_one(length, n):
    boundaries = fixed_count_boundaries(length, n)
    sizes = [b - a for a, b in segments(boundaries, length)]
    assert len(boundaries) == (min(n, length) - 1 if length else 0)
    assert sizes == sorted(sizes, reverse=True)  # the longer chunks come first
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_fixed_length_hand_cases():
    assert fixed_length_boundaries(10, 4) == [4, 8]  # chunks 4, 4, 2
    assert fixed_length_boundaries(8, 4) == [4]  # 8 is the length: no boundary there
    assert fixed_length_boundaries(3, 4) == []
    with pytest.raises(ValueError, match="segment_tokens"):
        fixed_length_boundaries(3, 0)


@given(st.integers(0, 300), st.integers(1, 50))
def test_fixed_length_segments_are_full_except_the_last(length, m):
    sizes = [b - a for a, b in segments(fixed_length_boundaries(length, m), length)]
    assert all(s == m for s in sizes[:-1]) and (not sizes or 1 <= sizes[-1] <= m)


# --- steps partition ----------------------------------------------------------------------------


def test_step_hand_cases():
    # boundary after "\n" (index 2 -> 3) and after ".\n\nSo" (index 4 -> 5, mid-token newline:
    # the token starts in the first step); the final "\n" is at the length: no boundary.
    assert step_boundaries(["a", "=1", "\n", "b", ".\n\nSo", " c", "\n"]) == [3, 5]
    # a run of blank-line tokens is one step end: after "\n\n" (index 2), not after "\n" (index 1)
    assert step_boundaries(["x", "\n", "\n\n", "y"]) == [3]
    assert step_boundaries(["\n", "y"]) == [1]  # a leading newline ends an (empty) first line
    assert step_boundaries([]) == []


@pytest.fixture(scope="module")
def gsm8k_answers(shared_data):
    with open(shared_data / "gsm8k" / "train.jsonl") as f:
        return [json.loads(next(f))["answer"] for _ in range(200)]


def test_steps_of_real_gsm8k_answers(gsm8k_answers):
    # A real byte-level BPE tokenizer trained on the answers themselves; token texts are the
    # character spans of the encoding, so joining them gives back the answer (ASCII answers only:
    # a multi-byte character is split over byte tokens that share one character span).
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(gsm8k_answers, trainers.BpeTrainer(vocab_size=400, show_progress=False))
    for answer in [a for a in gsm8k_answers if a.isascii()][:50]:
        texts = [answer[a:b] for a, b in tokenizer.encode(answer).offsets]
        assert "".join(texts) == answer
        steps = ["".join(texts[a:b]) for a, b in segments(step_boundaries(texts), len(texts))]
        assert steps == [line + "\n" for line in answer.split("\n")[:-1]] + [answer.split("\n")[-1]]


# --- segments and the registry --------------------------------------------------------------------


def test_segments_hand_cases():
    assert segments([0, 2], 5) == [(0, 2), (2, 5)]  # boundary 0 adds no leading range
    assert segments([2, 5], 5) == [(0, 2), (2, 5)]  # boundary at the length adds no empty range
    assert segments([], 0) == []


@pytest.mark.parametrize("bad", [[3, 1], [2, 2], [-1], [6], [1.5]])
def test_segments_reject_invalid_boundaries(bad):
    with pytest.raises(ValueError, match=r"boundaries: expected strictly increasing ints in \[0, 5\]"):
        segments(bad, 5)


@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n)))))
def test_segments_partition_the_response_exactly(length_and_boundaries):
    length, boundary_set = length_and_boundaries
    boundaries = sorted(boundary_set)
    ranges = segments(boundaries, length)
    covered = [t for a, b in ranges for t in range(a, b)]
    assert covered == list(range(length))  # every token once, in order
    assert all(a < b for a, b in ranges)  # no empty range
    assert {a for a, _ in ranges} == ({0} | set(boundaries)) - {length}


def test_registry_names_and_dispatch():
    assert sorted(PARTITIONS) == ["cutpoint", "fixed_count", "fixed_length", "none", "steps"]
    for name, partition in PARTITIONS.items():  # every parameter is a config field of the same name
        assert set(partition.params) <= {f.name for f in dataclasses.fields(PartitionConfig)}, name
    probs, texts = [0.95, 0.5, 0.99, 0.2], ["a", "\n", "b", "c"]
    assert partition_boundaries("cutpoint", probs=probs, token_texts=texts, interval=1) == [1, 3]
    assert partition_boundaries("fixed_count", probs=probs, n_segments=2) == [2]
    assert partition_boundaries("fixed_length", length=4, segment_tokens=3) == [3]
    assert partition_boundaries("steps", token_texts=texts, length=4) == [2]
    assert partition_boundaries("none", probs=probs) == []  # GRPO / RLOO: one segment


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown partition 'vine'; choose one of \['cutpoint', "):
        partition_boundaries("vine", length=3)
    with pytest.raises(ValueError, match="partition 'cutpoint' needs 'probs'"):
        partition_boundaries("cutpoint", length=3)
    with pytest.raises(ValueError, match="disagree on the response length"):
        partition_boundaries("fixed_count", probs=[0.5, 0.5], length=3)
    with pytest.raises(TypeError, match="n_segments"):
        partition_boundaries("fixed_length", length=3, n_segments=2)


def test_validate_boundaries_accepts_numpy_ints():
    import numpy as np

    validate_boundaries(list(np.array([0, 2], dtype=np.int64)), 3)
    assert segments(list(np.array([2], dtype=np.int64)), 3) == [(0, 2), (2, 3)]
