"""`compare_table` on hand-made compare.parquet rows: the gain from the last evaluation, or from the mean of the
last few, and the paired difference to the first arm (the end-to-end report: tests/test_compare.py)."""

import pytest

from spo.stats import paired_interval
from stages.reports.compare import compare_table, merge_compare_rows, table_markdown

ACCURACY = {  # (arm, seed): held-out accuracy at iterations 0, 4, 8, 12
    ("a", 1): [0.30, 0.50, 0.60, 0.70],
    ("a", 2): [0.40, 0.50, 0.80, 0.60],
    ("b", 1): [0.30, 0.40, 0.70, 0.50],
    ("b", 2): [0.40, 0.60, 0.60, 0.90],
}


def rows() -> list[dict]:
    """compare.parquet's rows for ACCURACY: an evaluation every 4 iterations, costs and credit on every one."""
    out = []
    for (arm, seed), accuracies in ACCURACY.items():
        for i in range(13):
            out.append({"arm": arm, "seed": seed, "iteration": i,
                        "accuracy": accuracies[i // 4] if i % 4 == 0 else None, "questions": 32 * i,
                        "sampled_tokens": 1000 * i, "trained_tokens": 100 * i, "seconds": 2.0 * i,
                        "credit_first_wrong": 0.5, "credit_correct": 0.2, "credit_correct_advantage": -0.1,
                        "credit_first_wrong_trained": 0.9})
    return out


def gains(last: int) -> dict[str, list[float]]:
    return {arm: [sum(ACCURACY[(arm, s)][-last:]) / last - ACCURACY[(arm, s)][0] for s in (1, 2)] for arm in "ab"}


@pytest.mark.parametrize("last", [1, 2, 3])
def test_the_gain_is_the_mean_of_the_last_evaluations_less_the_warm_start(last):
    table = compare_table(rows(), ["a", "b"], last=last)
    expected = gains(last)
    for row in table:
        assert row["gain_mean"] == pytest.approx(sum(expected[row["arm"]]) / 2)
        assert row["gain_min"] == pytest.approx(min(expected[row["arm"]]))
    diff = paired_interval(expected["b"], expected["a"])
    assert (table[1]["diff_mean"], table[1]["diff_low"], table[1]["diff_high"]) == pytest.approx(
        (diff.mean, diff.low, diff.high))
    assert table[1]["seconds_per_iteration"] == pytest.approx(2.0)
    assert ("last 3 evaluations" in table_markdown(table, "t")) == (last == 3)


def test_the_last_evaluation_and_the_mean_of_two_disagree_here():  # so the test above can tell them apart
    one, two = (compare_table(rows(), ["a", "b"], last=k)[1]["diff_mean"] for k in (1, 2))
    assert one == pytest.approx(0.05) and two == pytest.approx(0.0, abs=1e-12)


def test_more_evaluations_than_a_run_has_is_one_clear_error():
    with pytest.raises(ValueError, match=r"run a-s1: 3 evaluations after the warm start, fewer than the last 4"):
        compare_table(rows(), ["a", "b"], last=4)


def test_runs_from_several_files_join_and_a_run_measured_twice_differently_is_refused(tmp_path):
    first, second = tmp_path / "a" / "compare.parquet", tmp_path / "b" / "compare.parquet"
    everything = rows()
    seed_1 = [r for r in everything if r["seed"] == 1]
    seed_2 = [r for r in everything if r["seed"] == 2]
    joined = merge_compare_rows({first: seed_1, second: seed_2 + seed_1})  # seed 1 in both, the same rows
    assert sorted(joined, key=str) == sorted(everything, key=str)
    assert compare_table(joined, ["a", "b"]) == compare_table(everything, ["a", "b"])
    changed = [{**r, "accuracy": 0.99} if r["accuracy"] is not None and r["arm"] == "b" else r for r in seed_1]
    with pytest.raises(ValueError, match=r"b/compare.parquet: the run b-s1 is also in .*a/compare.parquet"):
        merge_compare_rows({first: seed_1, second: changed})
