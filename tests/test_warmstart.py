"""stages/warmstart.py: SFT into the accuracy band on a real tiny model, with checks closer near the band."""

from stages.runtime.resources import load_task
from stages.runtime.run_dir import load_preset
from stages.warmstart import fine_tune, initial_policy
from tests.helpers import TINY_OVERRIDES

NEAR_AT_ONCE = [
    "warmstart.max_steps=40", "warmstart.eval_every=4", "warmstart.band=[0.99, 1.0]", "warmstart.lr=4e-4"]
"""40 SFT steps of the tiny test model, checked every 4, with a band so high that the first check is already
"near" (half its lower edge) and none is inside it."""


def sft_rows(tmp_path, *settings: str) -> list[dict]:
    """`fine_tune`'s rows (one per step) under NEAR_AT_ONCE and `settings`."""
    cfg = load_preset("tiny").with_overrides(TINY_OVERRIDES + NEAR_AT_ONCE + list(settings))
    task = load_task(cfg)
    return fine_tune(initial_policy(cfg, task, tmp_path), task, cfg)[0]


def test_checks_come_every_eval_every_near_steps_once_a_check_reaches_half_the_band(tmp_path):
    rows = sft_rows(tmp_path, "warmstart.eval_every_near=2")
    checks = [(r["step"], r["accuracy"]) for r in rows if r["accuracy"] is not None]
    expected_next, near = 4, False
    for step, accuracy in checks:
        assert step == expected_next, checks
        near = near or accuracy >= 0.99 / 2  # from then on, every check is 2 steps after the last
        expected_next = step + (2 if near else 4)
    assert 0.99 / 2 <= checks[0][1] and len(checks) > 2, f"nothing was tested: {checks}"


def test_the_learning_rate_drops_to_lr_near_from_the_first_check_that_reaches_half_the_band(tmp_path):
    rows = sft_rows(tmp_path, "warmstart.lr_near=1e-5")
    first_near = next(r["step"] for r in rows if r["accuracy"] is not None and r["accuracy"] >= 0.99 / 2)
    assert first_near < 40, "no check reached half the band: nothing was tested"
    assert all(r["lr"] == 1e-5 for r in rows if r["step"] > first_near)
    assert all(r["lr"] != 1e-5 for r in rows if r["step"] <= first_near)


def test_a_check_past_the_band_rewinds_to_the_last_check_below_with_checks_twice_as_close(tmp_path):
    # At 4e-4 the test model's check jumps from 0.5 (step 2) to 1.0 (step 27): past [0.6, 0.9] in one interval.
    rows = sft_rows(tmp_path, "warmstart.lr=4e-4", "warmstart.max_steps=80", "warmstart.eval_every=2",
                    "warmstart.eval_every_near=24", "warmstart.band=[0.6, 0.9]")
    checks = [r for r in rows if r["accuracy"] is not None]
    past = [i for i, r in enumerate(checks) if r["accuracy"] > 0.9]
    assert past, f"no check passed the band: nothing was tested ({[(r['step'], r['accuracy']) for r in checks]})"
    for i in past:
        below = [r for r in checks[:i] if r["accuracy"] < 0.6][-1]
        interval = checks[i]["step"] - below["step"]
        after = rows[rows.index(checks[i]) + 1]
        assert after["step"] == below["step"] + 1, "training went on from the check below the band"
        assert checks[i + 1]["step"] == below["step"] + max(1, interval // 2), "checks come twice as close"
    kept = [r for r in rows if r["selected"]]
    assert len(kept) == 1 and 0.6 <= kept[0]["accuracy"] <= 0.9, [(r["step"], r["accuracy"]) for r in checks]
