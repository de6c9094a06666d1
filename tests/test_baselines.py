"""The paper's baselines through the Prefect flow on a tiny model: PPO with a critic, VinePPO steps, chunks.

Each preset runs one iteration of the real flow (temporary Prefect server, real Parquet, a real tiny
Llama on the `coin` test task); its artifacts match their schemas, and every stage rerun alone with
--force reproduces its outputs bit for bit.
"""


import pytest

from flows.spo_run import spo_run
from stages.runtime.artifacts import read_manifest, read_table
from stages.runtime.checksums import combined_hash
from stages.runtime.registry import find_stage, flow_plan
from stages.runtime.run_dir import create_run, load_preset
from tests.helpers import assert_tables_match_their_schemas

PRESETS = {
    "tiny-ppo": [],
    "tiny-vineppo": ["partition.step_marker=."],  # the coin task's answers, " 1. #### 1", have steps ending in "."
    "tiny-chunks": [],
}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def baseline(request, prefect_harness, tmp_path_factory):
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset(request.param).with_overrides([*TINY_OVERRIDES, *PRESETS[request.param]])
    run = create_run(tmp_path_factory.mktemp(request.param) / "run", cfg)
    spo_run(str(run.root))
    return request.param, run


def test_every_artifact_matches_its_schema(baseline):
    _, run = baseline
    assert_tables_match_their_schemas(run)


def test_each_stage_rerun_alone_reproduces_its_outputs(baseline):
    _, run = baseline
    cfg = run.config()
    for step in flow_plan(cfg, range(cfg.iterations)):
        for name, i in step:
            function, spec = find_stage(name, cfg)
            before = {str(p): combined_hash(read_manifest(p, removed_ok=True)["files"]) for p in spec.writes(run, i)}
            function(run.root, i, force=True)
            after = {str(p): combined_hash(read_manifest(p)["files"]) for p in spec.writes(run, i)}
            assert after == before, f"{name} {i} did not reproduce its outputs"


def test_the_method_specific_artifacts(baseline):
    name, run = baseline
    episodes = read_table(run.artifact(0, "episodes")).to_pylist()
    rollouts = {r["rollout_id"]: r for r in read_table(run.artifact(0, "rollouts")).to_pylist()}
    if name == "tiny-ppo":
        values = {r["rollout_id"]: r["values"] for r in read_table(run.artifact(0, "critic_values")).to_pylist()}
        for e in episodes:  # GAE with gamma = lambda = 1: reward - V(s_t) on every masked token
            r = rollouts[int(e["source_id"])]
            expected = [r["reward"] - v if m else 0.0 for v, m in zip(values[r["rollout_id"]], e["mask"])]
            assert e["advantages"] == pytest.approx(expected, abs=1e-5)
        assert (run.root / "checkpoints" / "0001-critic" / "model.safetensors").is_file()
        assert read_table(run.artifact(0, "critic_metrics")).num_rows > 0
        assert not run.artifact(0, "boundaries").exists(), "PPO samples no MC values"
    else:
        bounds = read_table(run.artifact(0, "boundaries")).to_pylist()
        if name == "tiny-vineppo":
            assert all(b["boundaries"][:1] == [0] for b in bounds), "VinePPO values the prompt"
        else:
            assert all(len(b["boundaries"]) <= 3 for b in bounds), "4 chunks: at most 3 MC points"
        assert all(e["mask"] == [True] * len(e["mask"]) or not rollouts[int(e["source_id"])]["response_ids"]
                   for e in episodes), "no probability mask: every token trained"
