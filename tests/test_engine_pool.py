"""Live engines shared by a flow run's stages: the same outputs as fresh engines, each role built once."""

import json

from stages.runtime.run_dir import create_run
from stages.sampling.engines import engine_pool
from tests.helpers import fingerprints, run_plan


def test_a_reused_engine_gives_the_outputs_of_fresh_ones(tmp_path, tiny_config):
    cfg = tiny_config.with_overrides(["iterations=2", "eval.every=1"])
    fresh = create_run(tmp_path / "fresh", cfg)
    run_plan(fresh)  # every stage loads its own engines, as `spo stage` does
    pooled = create_run(tmp_path / "pooled", cfg)
    with engine_pool() as pool:
        run_plan(pooled)
    assert fingerprints(pooled.root) == fingerprints(fresh.root)  # every artifact and checkpoint, bit for bit
    assert pool.builds == {"sampler": 1, "trainer": 1, "reference": 1}  # later checkpoints reloaded in place
    reports = [json.loads(m.read_text())["report"] for m in pooled.root.rglob("*.manifest.json")]
    loading = {r["stage"] for r in reports if "engine/load_seconds" in r["counters"]}
    assert {"generate", "resample", "train", "evaluate", "warmstart"} <= loading


def test_activation_checkpointing_turned_on_mid_run_changes_no_byte(tmp_path, monkeypatch):
    """`train.activation_checkpointing` is a frontier field (spo/config.py): turned on after iteration 0 of a
    run whose pool keeps the trainer live, it applies to that module and to the critic from iteration 1 on, and
    every artifact and checkpoint is the one of the run that never turned it on, bit for bit (tiny-ppo: the
    policy and PPO's critic)."""
    from stages import critic_train
    from stages.runtime.history import reopen
    from stages.runtime.registry import find_stage, flow_plan
    from stages.runtime.run_dir import load_preset
    from stages.training import policy
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset("tiny-ppo").with_overrides([*TINY_OVERRIDES, "iterations=2", "eval.every=2"])
    plain = create_run(tmp_path / "plain", cfg)
    run_plan(plain)
    calls = []
    for module in (policy, critic_train):  # record what each train stage asks of its model, then do it
        def spy(model, enabled, real=module.set_activation_checkpointing, name=module.__name__):
            real(model, enabled)
            calls.append((name.rsplit(".", 1)[1], enabled, model.is_gradient_checkpointing))
        monkeypatch.setattr(module, "set_activation_checkpointing", spy)
    switched = create_run(tmp_path / "switched", cfg)
    with engine_pool():
        for k, step in enumerate(flow_plan(cfg, range(2))):  # the start, iteration 0, iteration 1
            if k == 2:
                switched = reopen(switched.root, cfg.with_overrides(["train.activation_checkpointing=true"]))
                assert switched.changes()[-1]["how"] == "frontier", switched.changes()
            for name, i in step:
                find_stage(name, cfg)[0](switched.root, i)
    assert calls == [("policy", False, False), ("critic_train", False, False),
                     ("policy", True, True), ("critic_train", True, True)], calls
    assert fingerprints(switched.root) == fingerprints(plain.root)
