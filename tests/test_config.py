"""spo/config.py: overrides, round trips, cross-field checks, presets."""

import pytest

from spo.config import RunConfig, field_docs
from stages.run_dir import PRESETS_DIR, load_preset


def test_round_trip_through_dict():
    cfg = RunConfig().with_overrides(["tree.branching=[3,3,3]", "task.options={\"digits\": 3}", "seed=7"])
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.tree.branching == (3, 3, 3) and cfg.task.options == {"digits": 3} and cfg.seed == 7


@pytest.mark.parametrize("assignment, message", [
    ("sample.tempx=1", "no field 'tempx'"),
    ("samples.temperature=1", "no section 'samples'"),
    ("sample.temperature=hot", "cannot parse 'hot'"),
    ("advantage.prob_mask=yes", "expected true or false"),
    ("temperature", "is not key=value"),
])
def test_bad_overrides_name_the_field(assignment, message):
    with pytest.raises(ValueError, match=message):
        RunConfig().with_overrides([assignment])


def test_cross_field_checks_give_both_values():
    with pytest.raises(ValueError, match="64 is not a multiple of train.micro_batch_size 48"):
        RunConfig().with_overrides(["train.micro_batch_size=48"])
    with pytest.raises(ValueError, match="unknown algorithm 'spo-forest'"):
        RunConfig(algorithm="spo-forest")


def test_unknown_keys_in_a_file_are_errors():
    with pytest.raises(ValueError, match=r"preset.toml.sample: unknown field\(s\) \['temp'\]"):
        RunConfig.from_dict({"sample": {"temp": 1.0}}, where="preset.toml")


def test_every_field_is_documented():
    undocumented = [name for name, _, doc in field_docs() if not doc]
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
def test_presets_load(name):
    assert isinstance(load_preset(name), RunConfig)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of .*'tiny'"):
        load_preset("nope")
