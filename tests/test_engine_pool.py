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
