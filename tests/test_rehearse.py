"""`spo rehearse`: a GPU preset through the real run flow on a random-weight checkpoint of its model family.

One rehearsal of `gsm8k-qwen05b-instruct-chain` at 2 layers in the CI shape, sampled with vLLM as the preset
says (eager on a CPU), is shared by the module's slow tests; the other tests build configs and caches only (the
other model families rehearse in tests/test_rehearse_families.py, a module of its own so that the two test
workers share the rehearsals). Every GPU preset's rehearsal: benchmarks/rehearsals.py.
"""

import math
import mmap
import os
import shutil
import time

import pytest

from spo.advantages import policy_tokens
from spo.config import changed_fields
from stages.reports.rehearsal import MemoryTrace, shrink_table
from stages.runtime import rehearsal as rehearsal_module
from stages.runtime.artifacts import read_table
from stages.runtime.registry import unfinished_stages
from stages.runtime.rehearsal import (
    CPU_VLLM_OPTIONS,
    SHAPES,
    gpu_presets,
    native_bf16,
    on_cpu,
    plan_rehearsal,
    rehearsal_checkpoint,
)
from stages.runtime.run_dir import RunDir, load_preset
from tests.helpers import run_spo

PRESET = "gsm8k-qwen05b-instruct-chain"
GPU_PRESETS = gpu_presets()
QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def rehearsed(rehearsal_cache, tmp_path_factory):
    """`spo rehearse gsm8k-qwen05b-instruct-chain` (vLLM): (stdout, the run)."""
    run = tmp_path_factory.mktemp("runs") / "qwen"
    status, out, err = run_spo("rehearse", PRESET, "--run", str(run))
    assert status == 0, err[-3000:]
    yield out, RunDir(run)
    shutil.rmtree(run / "checkpoints")  # gigabytes of weights and AdamW state that pytest would keep


@pytest.mark.slow  # a rehearsal through the flow: minutes
def test_the_rehearsal_runs_every_stage_of_the_preset_kept_as_it_is_but_for_the_ci_shape(rehearsed, rehearsal_cache):
    _, run = rehearsed
    assert unfinished_stages(run) == [] and (run.checkpoint(1) / "model.safetensors").is_file()
    cfg, preset = run.config(), load_preset(PRESET)
    assert cfg.model.path == str(rehearsal_cache / "qwen2.5-instruct-2")
    # tokenizer, prompt format, stop rule, context, partition, whitening, algorithm, precision: as the preset
    assert set(changed_fields(preset, cfg)) <= {"name", "model.path", "model.vllm_options", "iterations",
                                                "train.precision", *SHAPES["spo-chain"]}
    assert cfg.model.engine == "vllm" and cfg.model.vllm_options == (CPU_VLLM_OPTIONS if on_cpu("auto") else
                                                                     preset.model.vllm_options)
    assert all(cfg.with_overrides([f"{k}={v}"]) == cfg for k, v in SHAPES["spo-chain"].items())
    # bf16 as the preset has it, or fp32 where this CPU would emulate bfloat16
    assert cfg.train.precision == ("bf16" if native_bf16(cfg.model.device) else "fp32")
    assert cfg.prompt.chat_template and cfg.sample.context_size == 4096


@pytest.mark.slow
def test_rollout_prompts_are_qwen_chat_turns_with_the_real_special_tokens(rehearsed):
    _, run = rehearsed
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer())
    rollouts = read_table(run.artifact(0, "rollouts")).to_pylist()
    assert len(rollouts) == 4 and len({r["prompt_index"] for r in rollouts}) == 2
    for rollout in rollouts:
        ids = rollout["prompt_ids"]
        text = tokenizer.decode(ids, skip_special_tokens=False)
        assert text.startswith(QWEN_SYSTEM + "<|im_start|>user\n") and text.endswith(
            "<|im_end|>\n<|im_start|>assistant\n"), text
        # <|im_start|> 151644 opens the system, user and assistant turns; <|im_end|> 151645 closes two
        assert ids.count(151644) == 3 and ids.count(151645) == 2 and ids[0] == 151644


@pytest.mark.slow
def test_no_boundary_at_an_untrained_final_eos(rehearsed):
    _, run = rehearsed
    cfg = run.config()
    boundaries = {b["rollout_id"]: b for b in read_table(run.artifact(0, "boundaries")).to_pylist()}
    for rollout in read_table(run.artifact(0, "rollouts")).to_pylist():
        response = rollout["response_ids"]
        policy = policy_tokens(response, cfg.advantage.train_on_eos, 151645)  # <|im_end|>, the eos
        cut = boundaries[rollout["rollout_id"]]
        assert all(b < policy for b in cut["boundaries"])  # a boundary b cuts before token b
        assert cut["n_cutpoints"] == sum(math.exp(v) < cfg.partition.tau for v in rollout["logp"][:policy])


@pytest.mark.slow
def test_the_shrink_table_the_costs_and_what_was_not_exercised_are_printed(rehearsed):
    out, _ = rehearsed
    shrink = out[: out.index("checkpoint: ")]
    for line in ("model depth (decoder layers): 24 -> 2",
                 "model.vllm_options: {'gpu_memory_utilization': 0.5} -> {'enforce_eager': True}",
                 "sample.questions_per_iteration: 64 -> 2", "sample.samples_per_question: 8 -> 2",
                 "resample.k: 4 -> 2", "sample.max_new_tokens: 1024 -> 16", "train.batch_size: 128 -> 4",
                 "eval.questions: 0 -> 2", "iterations: 1000 -> 1"):
        assert f"  {line}\n" in shrink, shrink
    table = out[out.index("stage costs (peak RSS: "):]
    for stage in ("warmstart", "evaluate", "prompts", "generate", "partition", "resample", "advantages", "train"):
        assert f"\n{stage} " in table, table
    assert "earlier" not in table, "every stage ran inside the trace"
    for finding in ("no correct answer: 0 of 8 graded (4 rollouts, 4 eval answers)",
                    "every reward is 0", "no rollout stopped: 0 of", "no sampled token had p >= partition.tau"):
        assert finding in out, out
    assert out.rstrip().splitlines()[-1].startswith(f"rehearse: {PRESET} ran in ")
    print(out)  # the tables, with -s or -rA


@pytest.mark.slow
def test_missing_task_data_fails_in_one_line_before_the_flow(rehearsed, tmp_path):
    run = tmp_path / "run"
    status, _, err = run_spo("rehearse", PRESET, "--engine", "transformers", "--run", str(run),
                             "--set", f"task.data={tmp_path / 'nothing'}")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("spo: error: task 'gsm8k' (task.data = ") and "nothing: no such file" in err
    assert not run.exists()


def test_a_preset_without_a_rehearsal_family_fails_in_one_line():
    status, out, err = run_spo("rehearse", "tiny")
    assert status == 2 and not out, out
    assert err.startswith("spo: error: no rehearsal family for model path ''; known: [") and err.count("\n") == 1


@pytest.mark.parametrize("preset", GPU_PRESETS)
def test_every_gpu_preset_builds_its_rehearsal_config(preset, tmp_path):
    shaped = plan_rehearsal(preset, layers=2, cache=tmp_path)
    cfg = shaped.cfg
    assert cfg.model.path == str(tmp_path / f"{shaped.family}-2") and cfg.iterations == 1
    emulated = set() if native_bf16(cfg.model.device) else {"train.precision"}  # bf16 -> fp32 on this CPU
    eager = {"model.vllm_options"} if on_cpu(cfg.model.device) and cfg.model.engine == "vllm" else set()
    dynamic = {"sample.dynamic_sampling"} if shaped.preset.sample.dynamic_sampling else set()  # random rewards
    shrunk = {"sample.overlong_buffer"} if shaped.preset.sample.overlong_buffer else set()
    expected = {"name", "model.path", "iterations", *SHAPES[cfg.algorithm], *emulated, *eager, *dynamic, *shrunk}
    assert set(changed_fields(shaped.preset, cfg)) <= expected  # a preset may already have a shape's value
    assert cfg.sample.questions_per_iteration == 2 and cfg.train.batch_size % cfg.train.micro_batch_size == 0
    assert cfg.sample.overlong_buffer <= cfg.sample.max_new_tokens and not cfg.sample.dynamic_sampling
    full = plan_rehearsal(preset, layers=None, full_shape=True, iterations=2, cache=tmp_path)
    assert set(changed_fields(full.preset, full.cfg)) == {"name", "model.path", "iterations", *emulated, *eager,
                                                               *dynamic}
    assert full.layers == rehearsal_module.FAMILIES[full.family].config["num_hidden_layers"]


def test_the_shrink_table_names_the_preset_and_the_rehearsal_value_of_every_changed_field(tmp_path):
    table = shrink_table(plan_rehearsal("math500-r1distill-tree", engine="transformers", cache=tmp_path,
                                        overrides=["task.data=/data/math.jsonl"])).splitlines()
    assert table[0] == ("rehearsal of math500-r1distill-tree: r1-distill-qwen with random weights, spo-tree, "
                        "engine transformers; field: preset value -> rehearsal value")
    for line in ("model depth (decoder layers): 28 -> 2", "tree.branching: 6-6-6 -> 2-2",
                 "partition.segment_tokens: 600 -> 8", "sample.max_new_tokens: 4096 -> 16",
                 'task.data: "" -> /data/math.jsonl', "model.engine: vllm -> transformers"):
        assert f"  {line}" in table, table
    assert not any(line.startswith(("  name:", "  eval.samples_per_question:")) for line in table)  # 1 already


def test_set_overrides_apply_last_through_the_configs_checks(tmp_path):
    shaped = plan_rehearsal(PRESET, overrides=["sample.max_new_tokens=48"], cache=tmp_path)
    assert shaped.cfg.sample.max_new_tokens == 48
    with pytest.raises(ValueError, match=r"^--set: train.batch_size = 4: expected a multiple of train.micro_batch_size = 3"):
        plan_rehearsal(PRESET, overrides=["train.micro_batch_size=3"], cache=tmp_path)


def test_the_checkpoint_is_built_once_under_a_temporary_name(tmp_path, monkeypatch):
    built = []

    def fake_build(family, folder, layers):
        built.append(folder.name)
        folder.mkdir()
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(rehearsal_module, "build_rehearsal_checkpoint", fake_build)
    shaped = plan_rehearsal(PRESET, cache=tmp_path)
    half = tmp_path / ".qwen2.5-instruct-2.tmp-1"  # a killed build: never taken for the checkpoint
    half.mkdir()
    assert rehearsal_checkpoint(shaped) == (tmp_path / "qwen2.5-instruct-2", True)
    assert rehearsal_checkpoint(shaped) == (tmp_path / "qwen2.5-instruct-2", False)
    assert built == [f".qwen2.5-instruct-2.tmp-{os.getpid()}"]
    assert (tmp_path / "qwen2.5-instruct-2" / "config.json").is_file()


def test_the_memory_trace_sees_an_allocation_inside_its_window():
    with MemoryTrace(interval=0.01) as trace:
        time.sleep(0.05)
        start = time.time()
        block = mmap.mmap(-1, 64 * 2**20)  # a fresh mapping: malloc could reuse pages already resident
        block.write(b"x" * len(block))  # written, so resident
        time.sleep(0.05)
        end = time.time()
        block.close()
    assert trace.peak(start, end) - trace.samples[0][1] >= 60 * 2**20
    assert trace.peak(end + 10, end + 20) is None


def test_a_cached_checkpoint_of_other_family_values_is_rebuilt_and_replaced(tmp_path, monkeypatch):
    def fake_build(family, folder, layers):
        folder.mkdir()
        (folder / "config.json").write_text('{"new": true}')

    monkeypatch.setattr(rehearsal_module, "build_rehearsal_checkpoint", fake_build)
    shaped = plan_rehearsal(PRESET, cache=tmp_path)
    old = tmp_path / "qwen2.5-instruct-2"
    old.mkdir()  # built before the marker existed, or from other family values
    (old / "config.json").write_text('{"old": true}')
    assert rehearsal_checkpoint(shaped) == (old, True)
    assert (old / "config.json").read_text() == '{"new": true}'
    assert rehearsal_checkpoint(shaped) == (old, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen2.5-instruct-2"]  # the stale one is gone
