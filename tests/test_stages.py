"""Stages on real data: GSM8K rows through prompts, generate, partition, resample and advantages.

A tiny BPE model trained on GSM8K text answers (badly); what is checked is the wiring: prompts in the
reference format with the dataset's gold answers, token-id prefixes, the context guard (docs/design.md#context-guard), shared
prefixes, and episodes that match the core functions on the stored artifacts.
"""

import numpy as np
import pytest

from spo.advantages import chain_token_advantages
from stages.runtime.artifacts import read_table
from stages.runtime.registry import find_stage, iteration_stages
from stages.runtime.resources import load_tokenizer
from stages.runtime.run_dir import create_run
from tests.helpers import GSM8K


@pytest.fixture(scope="module")
def gsm8k_run(tmp_path_factory, shared_data):
    from stages.runtime.run_dir import load_preset
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset("tiny").with_overrides(TINY_OVERRIDES + GSM8K + [f"task.data={shared_data / 'gsm8k'}"])
    run = create_run(tmp_path_factory.mktemp("gsm8k") / "run", cfg)
    find_stage("warmstart", cfg)[0](run.root, 0)
    for name in ("prompts", "generate", "partition", "resample", "advantages"):
        iteration_stages(cfg)[name][0](run.root, 0)
    return run


def test_prompts_are_real_gsm8k_rows_in_the_reference_format(gsm8k_run, shared_data):
    import json

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()]
    for p in read_table(gsm8k_run.artifact(0, "prompts")).to_pylist():
        row = rows[int(p["question_id"].split("/")[-1])]
        assert p["prompt_text"] == f"[MATH_TASK] Problem:\n{row['question']}\n\nSolution:"
        assert p["answer"] == row["answer"].split("####")[-1].strip()


def test_values_cover_every_boundary_with_the_context_guard(gsm8k_run):
    cfg = gsm8k_run.config()
    rollouts = {r["rollout_id"]: r for r in read_table(gsm8k_run.artifact(0, "rollouts")).to_pylist()}
    bounds = read_table(gsm8k_run.artifact(0, "boundaries")).to_pylist()
    values = read_table(gsm8k_run.artifact(0, "values")).to_pylist()
    assert len(values) == sum(len(b["boundaries"]) for b in bounds) > 0
    prefixes = {}
    for v in values:
        r = rollouts[v["rollout_id"]]
        prefix = tuple(r["prompt_ids"]) + tuple(r["response_ids"][: v["boundary"]])
        assert prefixes.setdefault(prefix, v["prefix_id"]) == v["prefix_id"]  # one id per unique prefix
        assert v["context_guarded"] == (len(prefix) >= cfg.sample.context_size)
        if v["context_guarded"]:
            assert v["n_samples"] == 0 and v["value"] == 0.0  # the unfinished penalty
        else:
            assert v["n_samples"] == cfg.resample.k


def test_episodes_match_the_core_functions_on_the_stored_artifacts(gsm8k_run):
    tau = gsm8k_run.config().partition.tau
    rollouts = {r["rollout_id"]: r for r in read_table(gsm8k_run.artifact(0, "rollouts")).to_pylist()}
    bounds = {b["rollout_id"]: b["boundaries"] for b in read_table(gsm8k_run.artifact(0, "boundaries")).to_pylist()}
    values = {}
    for v in read_table(gsm8k_run.artifact(0, "values")).to_pylist():
        values.setdefault(v["rollout_id"], {})[v["boundary_index"]] = v["value"]
    for e in read_table(gsm8k_run.artifact(0, "episodes")).to_pylist():
        r = rollouts[int(e["source_id"])]
        probs = np.exp(np.asarray(r["logp"], dtype=np.float64))
        vals = [values[r["rollout_id"]][i] for i in range(len(bounds[r["rollout_id"]]))]
        expected = chain_token_advantages(probs.tolist(), bounds[r["rollout_id"]], vals, r["reward"], tau=tau)
        assert e["advantages"] == pytest.approx(expected, abs=1e-6)
        assert e["mask"] == (probs < tau).tolist() and e["old_logp"] == r["logp"]


def test_mc_continuations_are_graded_on_the_whole_answer(gsm8k_run):
    """docs/design.md#mc-rewards: the text graded is the rollout's prefix followed by the continuation."""
    from stages.runtime.resources import load_task, load_tokenizer

    cfg = gsm8k_run.config()
    task, tokenizer = load_task(cfg), load_tokenizer(gsm8k_run.checkpoint(0))
    rollouts = {r["rollout_id"]: r for r in read_table(gsm8k_run.artifact(0, "rollouts")).to_pylist()}
    first = {}
    for v in read_table(gsm8k_run.artifact(0, "values")).to_pylist():
        first.setdefault(v["prefix_id"], v)
    for sample in read_table(gsm8k_run.artifact(0, "mc_samples")).to_pylist():
        v = first[sample["prefix_id"]]
        rollout = rollouts[v["rollout_id"]]
        head = rollout["response_ids"][: v["boundary"]]
        assert sample["text"] == tokenizer.decode(head + sample["continuation_ids"], skip_special_tokens=True)
        example = task.example(rollout["question_id"])
        assert sample["reward"] == task.reward(sample["text"], example, finished=sample["finish_reason"] == "stop")


@pytest.mark.parametrize("train_on_eos", [True, False])
def test_a_final_eos_is_a_cutpoint_only_when_it_is_trained(tmp_path, train_on_eos):
    """tau = 1 makes every token a cutpoint; an untrained final EOS is not a policy decision (docs/design.md#stop-token)."""
    from stages.runtime.run_dir import load_preset
    from tests.helpers import TINY_OVERRIDES

    cfg = load_preset("tiny").with_overrides(TINY_OVERRIDES + [
        "partition.tau=1.0", "partition.interval=1", f"advantage.train_on_eos={str(train_on_eos).lower()}"])
    run = create_run(tmp_path / "run", cfg)
    find_stage("warmstart", cfg)[0](run.root, 0)
    for name in ("prompts", "generate", "partition"):
        iteration_stages(cfg)[name][0](run.root, 0)
    eos = load_tokenizer(run.tokenizer()).eos_token_id
    rollouts = read_table(run.artifact(0, "rollouts")).to_pylist()
    boundaries = {r["rollout_id"]: r["boundaries"] for r in read_table(run.artifact(0, "boundaries")).to_pylist()}
    stopped = [r for r in rollouts if r["response_ids"][-1] == eos]
    assert stopped, "no rollout ended with EOS, so nothing was tested"
    for r in stopped:
        last = len(r["response_ids"]) - 1
        assert (last in boundaries[r["rollout_id"]]) == train_on_eos
        cutpoints = [i for i, logp in enumerate(r["logp"][: last + int(train_on_eos)]) if np.exp(np.float64(logp)) < 1.0]
        assert boundaries[r["rollout_id"]] == cutpoints
