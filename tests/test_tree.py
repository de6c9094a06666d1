"""SPO-tree stages on a tiny real model: tree shape, values and advantages, level reruns, replay buffer."""

import pyarrow.parquet as pq
import pytest

from flows.cli import main as spo
from spo.advantages import tree_values_and_advantages
from stages.reports.inspect_run import tree_text
from stages.runtime.artifacts import read_table
from stages.runtime.registry import find_stage, iteration_stages
from stages.runtime.run_dir import create_run

TREE = ["algorithm=spo-tree", "tree.branching=[2,2,2]", "partition.method=fixed_length", "partition.segment_tokens=4",
        "advantage.method=tree", "tree.replay_per_question=3",
        "sample.questions_per_iteration=3", "train.episodes_per_iteration=8"]


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    """A tiny spo-tree run through two iterations, driven stage by stage."""
    from stages.runtime.run_dir import load_preset
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset("tiny").with_overrides(TINY_OVERRIDES + TREE)
    run = create_run(tmp_path_factory.mktemp("tree") / "run", cfg)
    find_stage("warmstart", cfg)[0](run.root, 0)
    for iteration in (0, 1):
        for function, _ in iteration_stages(cfg).values():
            function(run.root, iteration)
    return run


def levels(run, iteration):
    return [read_table(run.artifact(iteration, f"tree_nodes-{d}")).to_pylist() for d in (1, 2, 3)]


def test_stage_names_follow_the_depth(tree_run):
    assert list(iteration_stages(tree_run.config())) == ["prompts", "tree-1", "tree-2", "tree-3", "tree-advantages",
                                                          "train"]


def test_tree_shape_follows_branching_and_early_stops(tree_run):
    one, two, three = levels(tree_run, 0)
    assert len(one) == 3 * 2  # 3 prompts x 2 children
    assert len(two) == 2 * sum(not n["leaf"] for n in one)
    assert len(three) == 2 * sum(not n["leaf"] for n in two)
    for depth, nodes in enumerate((one, two, three), start=1):
        for n in nodes:
            assert n["depth"] == depth and n["node_id"].rsplit(".", 1)[0] == n["parent_id"]
            assert n["leaf"] == (n["reward"] is not None)
            if n["finish_reason"] == "stop" or depth == 3:
                assert n["leaf"]
            if depth < 3:  # fixed-length levels: at most M tokens
                assert len(n["segment_ids"]) <= 4
    assert all(n["leaf"] for n in three)


def test_values_and_advantages_match_the_core_functions(tree_run):
    nodes = [n for level in levels(tree_run, 0) for n in level]
    episodes = read_table(tree_run.artifact(0, "episodes")).to_pylist()
    replay = read_table(tree_run.artifact(0, "replay")).to_pylist()
    edges = {e["source_id"]: e for e in episodes + replay}
    assert edges, "the coin task should give the tiny model mixed rewards"
    for prompt_index in range(3):
        tree = [n for n in nodes if n["prompt_index"] == prompt_index]
        ids = [str(prompt_index)] + [n["node_id"] for n in tree]
        parents = [None] + [ids.index(n["parent_id"]) for n in tree]
        rewards = [None] + [n["reward"] for n in tree]
        values, advantages = tree_values_and_advantages(parents, rewards, method="tree")
        for k, node in enumerate(tree, start=1):
            if advantages[k] == 0.0 or not node["segment_ids"]:
                assert node["node_id"] not in edges  # zero-advantage edges are dropped
                continue
            edge = edges[node["node_id"]]
            assert edge["reward"] == pytest.approx(values[k])
            masked = [a for a, m in zip(edge["advantages"], edge["mask"]) if m]
            assert all(a == pytest.approx(advantages[k]) for a in masked)
            assert all(a == 0.0 for a, m in zip(edge["advantages"], edge["mask"]) if not m)
            assert edge["response_ids"] == node["segment_ids"]


def test_rerunning_a_level_reproduces_it(tree_run, capsys):
    path = tree_run.artifact(0, "tree_nodes-2")
    before = pq.read_table(path)
    spo(["stage", "tree-2", "--run", str(tree_run.root), "--iteration", "0", "--force"])
    assert pq.read_table(path).equals(before)


def test_replay_buffer_is_persisted_and_reproduced(tree_run):
    cfg = tree_run.config()
    replay0 = read_table(tree_run.artifact(0, "replay")).to_pylist()
    episodes1 = read_table(tree_run.artifact(1, "episodes"))
    per_question = {}
    for e in episodes1.to_pylist():
        per_question[e["question_id"]] = per_question.get(e["question_id"], 0) + 1
    assert max(per_question.values()) <= cfg.tree.replay_per_question
    old = [e for e in episodes1.to_pylist() if e["iteration"] == 0]
    assert replay0 and old, "edges of iteration 0 should wait in the buffer and be taken in iteration 1"
    waiting = {(e["source_id"], e["question_id"]) for e in replay0}
    assert all((e["source_id"], e["question_id"]) in waiting for e in old)
    # a resumed run recomputes iteration 1's episodes from the stored buffer: the same edges
    spo(["stage", "tree-advantages", "--run", str(tree_run.root), "--iteration", "1", "--force"])
    assert read_table(tree_run.artifact(1, "episodes")).equals(episodes1)


def test_inspect_draws_a_tree(tree_run):
    text = tree_text(tree_run.root, 0, 1)
    assert text.startswith("prompt 1") and "1.0.1" in text and " V " in text and " A " in text


def test_the_flow_runs_a_tree_iteration(prefect_harness, tmp_path, tiny_config):
    from flows.spo_run import spo_run

    run = create_run(tmp_path / "run", tiny_config.with_overrides(TREE))
    state = spo_run(str(run.root), return_state=True)
    assert state.is_completed()
    rows = state.result()
    assert rows[0]["reward_mean"] is not None and rows[0]["sampled_tokens"] > 0
    assert rows[0]["shared_prefix_tokens"] > 0  # siblings share their parent's prefix
    assert run.checkpoints() == [0, 1]
