"""The memory plan (spo/memory.py, stages/runtime/memory_plan.py) against what a CPU run allocates, and `spo plan`.

Bytes are measured with torch.profiler's memory events (`profile_memory=True`): every CPU allocation and free
inside the block, with its size and time, so their running sum is the live bytes above the block's start at
every moment and its maximum the peak (the process RSS would also count the allocator's caches). The model is
Qwen2.5-0.5B-Instruct's published architecture (`rehearsal_config`) at 2 of its 24 layers with random float32
weights: the plan of that depth must match what it allocates, and its per-layer and embedding counts scale
exactly to the full model.
"""

import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification
from transformers.initialization import no_init_weights

from spo.config import ConfigError
from spo.memory import (
    SAMPLING_BYTES_PER_LOGIT,
    Architecture,
    GiB,
    parameter_count,
    rerun_bytes,
    saved_bytes,
    scoring_bytes,
    training_pass_bytes,
)
from spo.policy.critic import state_values
from spo.policy.families import FAMILIES, config_json
from spo.policy.logprobs import response_logprobs
from spo.policy.rehearsal import rehearsal_config
from spo.policy.transformers_engine import set_activation_checkpointing
from stages.runtime.memory_plan import check_memory_plan, memory_plan
from stages.runtime.rehearsal import gpu_presets
from stages.runtime.run_dir import load_preset

REPO = Path(__file__).resolve().parents[1]
SMALL = {"vocab_size": 4096, "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4,
         "num_key_value_heads": 2}
"""Qwen2 at a width where the logits outweigh the output layer's weights at a few micro-batch rows, as they do
at the presets' size (at Qwen2.5's own width that takes thousands of tokens: minutes on a CPU)."""


def live_bytes(run) -> tuple[list[int], dict[str, int]]:
    """The live CPU bytes above the start after each allocation or free while `run()` runs, and for each op
    name the index in that list at which it first starts."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live, total = [], 0
    for _, size in memory:
        total += size
        live.append(total)
    starts = {}
    for event in sorted(events, key=lambda e: e.start_ns()):
        starts.setdefault(event.name(), sum(1 for t, _ in memory if t < event.start_ns()))
    return live, starts


def random_model(config) -> torch.nn.Module:
    """`config`'s causal LM with random float32 weights (N(0, 0.02); their values do not change the bytes)."""
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    return model.train()


def training_pass(model, rows: int, length: int, response: int, autocast: bool):
    """One forward and backward of `response_logprobs` as `ppo_step` runs it, the loss reduced to a sum;
    profiler marks where the forward and the backward end (inside the autocast block)."""
    prompts, responses = [[1] * (length - response)] * rows, [[2] * response] * rows

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logprobs, _ = response_logprobs(model, prompts, responses, 0.6, 0)
            loss = logprobs.sum()
            with torch.profiler.record_function("forward done"):
                pass
            loss.backward()
            with torch.profiler.record_function("backward done"):
                pass

    return run


def planned(folder: Path, **settings) -> dict[str, int]:
    """Each part of the plan of the Qwen preset on the checkpoint config in `folder`, by the start of its name."""
    changes = [f"model.path={folder}", *(f"{key.replace('__', '.')}={value}" for key, value in settings.items())]
    plan = memory_plan(load_preset("gsm8k-qwen05b-instruct-chain").with_overrides(changes), 80 * GiB)
    parts = [part for part, _ in plan.resident]
    parts += [part for stage in plan.stages for phase in stage.phases for part in phase.parts]
    return {part.name.split(",")[0].split(" of ")[0]: part.bytes for part in parts}


def close(measured: int, expected: int, within: float) -> bool:
    return abs(measured - expected) <= within * expected


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    config = rehearsal_config("qwen2.5-instruct", 2)
    folder = tmp_path_factory.mktemp("qwen-2-layers")
    config.to_json_file(folder / "config.json")
    return types.SimpleNamespace(folder=folder, model=random_model(config))


def test_the_parameter_count_is_the_published_one_and_the_meta_device_one():
    counts = {}
    for family in FAMILIES:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(rehearsal_config(family))
        arch = Architecture.from_config(rehearsal_config(family).to_dict())
        assert arch == Architecture.from_config(config_json(family)), family  # the plan counts the plain values
        counts[family] = parameter_count(arch)
        assert counts[family] == sum(p.numel() for p in model.parameters()), family
    # docs/design.md#rehearsal-checkpoints
    assert counts == {"qwen2.5-instruct": 494_032_768, "r1-distill-qwen": 1_777_088_000, "rhomath": 1_100_048_384}


def test_weights_per_layer_and_embedding_scale_to_full_depth(two_layers):
    named = dict(two_layers.model.named_parameters())
    layer = [sum(p.numel() for n, p in named.items() if n.startswith(f"model.layers.{k}.")) for k in (0, 1)]
    rest = sum(p.numel() for p in named.values()) - sum(layer)
    assert layer[0] == layer[1] and rest == 151_936 * 896 + 896  # the tied embedding and the final norm
    assert rest + 24 * layer[0] == 494_032_768
    weights = sum(p.nbytes for p in two_layers.model.parameters())
    assert weights == planned(two_layers.folder)["trainer weights"]


def test_gradients_and_adamw_state_are_the_planned_bytes(two_layers):
    model, plan = two_layers.model, planned(two_layers.folder)
    training_pass(model, 1, 8, 4, autocast=False)()
    gradients = sum(p.grad.nbytes for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, foreach=True)  # foreach: torch's default on a GPU
    step, _ = live_bytes(optimizer.step)  # the first step makes the state, then steps
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values())
    del optimizer
    assert close(gradients, plan["gradients"], 0.10), (gradients, plan["gradients"])
    assert close(state, plan["AdamW moments"], 0.10), (state, plan["AdamW moments"])
    temporaries = max(step) - state
    assert close(temporaries, plan["AdamW step temporaries"], 0.10), (temporaries, plan["AdamW step temporaries"])


def test_float32_activations_are_the_planned_bytes(two_layers):
    # 1 row of 256 tokens, the last 32 scored; the gradients exist, as from a step's second micro-batch on
    training_pass(two_layers.model, 1, 8, 4, autocast=False)()
    live, starts = live_bytes(training_pass(two_layers.model, 1, 256, 32, autocast=False))
    plan = planned(two_layers.folder, train__precision="fp32", train__micro_batch_size=1, train__batch_size=1,
                   sample__context_size=256, sample__max_new_tokens=32)
    arch = Architecture.from_config(rehearsal_config("qwen2.5-instruct", 2).to_dict())
    kept = live[starts["forward done"] - 1]
    assert close(kept, saved_bytes(arch, 256, 32, autocast=False), 0.05), kept
    assert close(max(live), plan["activations"], 0.25), (max(live), plan["activations"])


@pytest.mark.slow  # bfloat16 matmuls on a CPU without AVX-512 BF16 take half a minute even at 64 tokens
def test_bf16_autocast_activations_and_weight_copies_are_the_planned_bytes(two_layers):
    training_pass(two_layers.model, 1, 8, 4, autocast=False)()  # the gradients exist
    run = training_pass(two_layers.model, 1, 64, 8, autocast=True)
    plan = planned(two_layers.folder, train__precision="bf16", train__micro_batch_size=1, train__batch_size=1,
                   sample__context_size=64, sample__max_new_tokens=8)
    live, starts = live_bytes(run)
    copies = live[starts["backward done"] - 1] - live[-1]  # what leaving the autocast block frees
    assert close(copies, plan["bf16 autocast weight copies"], 0.10), (copies, plan["bf16 autocast weight copies"])
    expected = plan["bf16 autocast weight copies"] + plan["activations"]
    assert close(max(live), expected, 0.25), (max(live), expected)


@pytest.mark.parametrize("autocast", [False, True])
def test_passes_where_the_logits_dominate_are_the_planned_bytes(autocast):
    config = rehearsal_config("qwen2.5-instruct", 1)
    for key, value in SMALL.items():
        setattr(config, key, value)
    model, arch = random_model(config), Architecture.from_config(config.to_dict())
    training_pass(model, 1, 2, 1, autocast=False)()  # the gradients exist
    live, _ = live_bytes(training_pass(model, 2, 512, 511, autocast))
    assert close(max(live), training_pass_bytes(arch, 2, 512, 511, autocast), 0.25)
    model = model.to(torch.bfloat16 if autocast else torch.float32).eval()
    for rows, length, response in ((4, 256, 255), (4, 1024, 1)):  # the logits' peak, the decoder's
        prompts, responses = [[1] * (length - response)] * rows, [[2] * response] * rows
        with torch.inference_mode():
            live, _ = live_bytes(lambda: response_logprobs(model, prompts, responses, 0.6, 0))  # noqa: B023 (run now)
        expected = scoring_bytes(arch, rows * length, rows * response * arch.vocab, 2 if autocast else 4)
        assert close(max(live), expected, 0.25), (rows, length, max(live), expected)


def narrow(layers: int, tied: bool = True):
    """Qwen2 at `SMALL`'s width, `layers` deep, its output layer tied to the embedding or not."""
    config = rehearsal_config("qwen2.5-instruct", layers)
    for key, value in {**SMALL, "tie_word_embeddings": tied}.items():
        setattr(config, key, value)
    return config


def test_checkpointed_layers_keep_only_their_inputs(two_layers):
    # train.activation_checkpointing: the forward keeps each layer's float32 input (2 x 256 x 896 x 4 bytes) and
    # the head's tensors, 24 MB here instead of 78 MB; the peak is still the tied embedding's gradients at the end
    plan = planned(two_layers.folder, train__precision="fp32", train__micro_batch_size=1, train__batch_size=1,
                   sample__context_size=256, sample__max_new_tokens=32, train__activation_checkpointing="true")
    arch = Architecture.from_config(rehearsal_config("qwen2.5-instruct", 2).to_dict())
    set_activation_checkpointing(two_layers.model, True)
    try:
        training_pass(two_layers.model, 1, 8, 4, autocast=False)()
        live, starts = live_bytes(training_pass(two_layers.model, 1, 256, 32, autocast=False))
    finally:
        set_activation_checkpointing(two_layers.model, False)
    kept = live[starts["forward done"] - 1]
    assert close(kept, saved_bytes(arch, 256, 32, autocast=False, checkpointed=True), 0.05), kept
    assert kept < saved_bytes(arch, 256, 32, autocast=False) / 3
    assert close(max(live), plan["activations"], 0.25), (max(live), plan["activations"])


BF16_RERUN = pytest.mark.slow  # bfloat16 matmuls through 4 layers on a CPU without AVX-512 BF16: ~10 s each


@pytest.mark.parametrize("layers, response, tied, peak, autocast", [
    (1, 511, True, "logits", False),  # the top of the backward: the logits and three logit-sized gradients
    (1, 511, True, "logits", True),
    (4, 8, True, "rerun", False),  # the last layer's rerun, a tied output layer's gradient waiting for the embedding's
    pytest.param(4, 8, True, "rerun", True, marks=BF16_RERUN),
    (4, 8, False, "rerun", False),
    pytest.param(4, 8, False, "rerun", True, marks=BF16_RERUN),
])
def test_checkpointed_passes_are_the_planned_bytes(layers, response, tied, peak, autocast):
    # spo.memory.training_pass_bytes(checkpointed=True): the largest of the top of the backward (every layer's
    # input, the head, the logits' backward) and the rerun of the last layer (the inputs, its tensors, its MLP's
    # two gradients); 2 rows of 512 tokens
    config = narrow(layers, tied)
    model, arch = random_model(config), Architecture.from_config(config.to_dict())
    set_activation_checkpointing(model, True)
    training_pass(model, 1, 8, 4, autocast=False)()  # the gradients exist
    live, starts = live_bytes(training_pass(model, 2, 512, response, autocast))
    copies = live[starts["backward done"] - 1] - live[-1] if autocast else 0  # what leaving autocast frees
    expected = training_pass_bytes(arch, 2, 512, response, autocast, checkpointed=True)
    assert (expected == rerun_bytes(arch, 2 * 512, autocast)) == (peak == "rerun"), (expected, peak)
    kept = live[starts["forward done"] - 1] - copies
    assert close(kept, saved_bytes(arch, 2 * 512, 2 * response, autocast, checkpointed=True), 0.05), kept
    assert close(max(live) - copies, expected, 0.05), (max(live) - copies, expected)


def test_a_checkpointed_critic_pass_is_the_planned_bytes():
    # PPO's critic (a value head on every position, float32): with checkpointing its peak is the last layer's rerun
    config = narrow(4, tied=False)
    config.num_labels = 1
    with no_init_weights():
        model = AutoModelForTokenClassification.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    set_activation_checkpointing(model.train(), True)
    arch = Architecture.from_config(config.to_dict())

    def critic_pass(rows: int, length: int):
        def run():
            values, _ = state_values(model, [[1] * (length - 256)] * rows, [[2] * 256] * rows, 0)
            values.sum().backward()
        return run

    critic_pass(1, 300)()  # the gradients exist
    live, _ = live_bytes(critic_pass(2, 512))
    expected = training_pass_bytes(arch, 2, 512, 256, False, output_layer=False, checkpointed=True)
    assert expected == rerun_bytes(arch, 2 * 512, False, output_layer=False)
    assert close(max(live), expected, 0.05), (max(live), expected)


def test_a_sampling_step_is_the_planned_bytes_per_logit():
    from spo.policy.sampling import choose_tokens

    logits = torch.randn(64, 4096, dtype=torch.bfloat16)
    live, _ = live_bytes(lambda: choose_tokens(logits, torch.rand(64), torch.full((64,), 0.6), torch.full((64,), 0.9)))
    assert close(max(live), SAMPLING_BYTES_PER_LOGIT * logits.numel(), 0.10)


def test_the_planned_vllm_share_is_the_engine_s_default(monkeypatch, tmp_path):
    # a stand-in vllm on a machine that says it has a GPU: what share does VLLMEngine.load ask vLLM for?
    from spo.policy.tiny import create_tiny_checkpoint
    from spo.policy.vllm_engine import GPU_MEMORY_UTILIZATION, VLLMEngine

    asked = {}
    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **options: asked.update(options)
    vllm.SamplingParams = dict
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    create_tiny_checkpoint(tmp_path, ["abc"], hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    VLLMEngine.load(tmp_path, device="cpu")
    assert asked["gpu_memory_utilization"] == GPU_MEMORY_UTILIZATION == 0.6


def test_every_gpu_preset_fits_80_gib():
    # The reference trained these settings on 80 GB GPUs: with activation checkpointing and the reference's vLLM
    # shares (0.3 RhoMath, 0.5 Qwen), each preset's plan fits; the least room is math500-r1distill-tree's, 9.5 GiB.
    free = {name: 80 * GiB - check_memory_plan(load_preset(name), 80 * GiB).worst().peak for name in gpu_presets()}
    assert len(free) == 10 and min(free.values()) > 0.5 * GiB, {n: round(room / GiB, 2) for n, room in free.items()}


@pytest.mark.parametrize("gpu, changes, refusals", [(64, [], 1), (80, ["train.activation_checkpointing=false"], 9)])
def test_a_refused_preset_names_settings_that_fit(gpu, changes, refusals):
    # On 64 GiB the MATH preset is refused; without activation checkpointing, on 80 GiB, the RhoMath presets too,
    # and turning it on, which changes no number, is the first way out named.
    refused = {}
    for name in gpu_presets():
        cfg = load_preset(name).with_overrides(changes)
        try:
            check_memory_plan(cfg, gpu * GiB)
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message and " fits with --set " in message, message
            first = shlex.split(message.split(" fits with ")[1].split(" or ")[0])[1::2]  # after each --set
            assert check_memory_plan(cfg.with_overrides(first), gpu * GiB), (name, first)
            refused[name] = first
    assert "gsm8k-qwen05b-instruct-chain" not in refused and len(refused) == refusals, refused
    if changes:
        assert all(first[0] == "train.activation_checkpointing=true" for first in refused.values()), refused


def test_spo_plan_prints_the_plan_or_refuses_in_one_line(capsys):
    from flows.cli import main

    assert main(["plan", "gsm8k-qwen05b-instruct-chain", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "train " in out and "AdamW moments" in out and "vLLM share" in out
    assert main(["plan", "gsm8k-qwen05b-instruct-chain", "--gpu-memory", "24", "--set", "train.micro_batch_size=1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spo: error: memory plan: stage train needs "), lines
    assert "of the GPU's 24.00 GiB (25,769,803,776 bytes)" in lines[0], lines[0]
    assert "fits with --set 'model.vllm_options=" in lines[0], lines[0]


def test_spo_plan_imports_neither_torch_nor_transformers(tmp_path):
    # The plan is arithmetic on a config (docs/design.md#memory-plan): a fresh `spo plan` process must not import
    # torch or transformers, seconds of imports on a CPU. Not marked slow: the child takes about half a second.
    program = ("import sys; from flows.cli import main; "
               "status = main(['plan', 'gsm8k-rho1b-chain', '--gpu-memory', '40']); "
               "print(status, 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()  # a plan was made: it refuses 40 GiB, in one line
    assert len(lines) == 1 and lines[0].startswith("spo: error: memory plan: stage train needs"), result.stderr
    assert result.stdout.split() == ["2", "False", "False"], result.stdout  # status 2; torch, transformers
    assert not list(tmp_path.iterdir()), "Prefect started (its home folder was written)"


def test_preflight_checks_the_plan_on_a_gpu_and_not_on_a_cpu(monkeypatch):
    from stages.runtime.preflight import preflight

    cfg = load_preset("tiny")
    memory = {"total": 2**20}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        total_memory=memory["total"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preflight(cfg)  # on the CPU: not checked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="memory plan: stage warmstart needs .* of the GPU's 0.00 GiB"):
        preflight(cfg)
    memory["total"] = 8 * GiB
    preflight(cfg)


def test_an_architecture_the_plan_cannot_count_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2': the memory plan counts the llama and qwen2"):
        memory_plan(load_preset("tiny").with_overrides([f"model.path={tmp_path}"]), 80 * GiB)
