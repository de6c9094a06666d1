"""The memory plan of a run (`spo plan`, and a preflight step on a GPU): the expected peak GPU memory of each
stage of its flow, part by part, and a one-line refusal, with settings that would fit, when one cannot fit.

What is resident follows the flow's engine pool (stages/sampling/engines.py): each role keeps one live engine
for the whole flow run. The trainer's float32 weights arrive with the warm start; the sampler (a vLLM share
of the GPU plus its transformers scoring copy, or a transformers copy) with the first sampling stage; the
trainer's gradients, its AdamW moments and the KL reference with the first train stage, and all of them
stay: `ppo_step` zeroes the gradients (to None) at the start of a step, not after it, and the pool keeps the
optimizer and the reference for the next iteration. Every stage after the first train stage therefore holds
all of it, and adds its own working set: sampling (inside the vLLM share, or the transformers engine's
batches), scoring, or one PPO micro-batch at `train.micro_batch_size` rows of `sample.context_size` tokens
(the longest a row can be). The bytes of each part come from spo/memory.py (docs/design.md#memory-plan).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spo.config import ConfigError, RunConfig
from spo.memory import (
    ADAMW_STEP_BYTES,
    Architecture,
    GiB,
    autocast_copy_bytes,
    inference_pass_bytes,
    kv_bytes_per_token,
    parameter_count,
    sampling_bytes,
    scoring_bytes,
    training_pass_bytes,
)
from spo.policy.engine import (
    BATCH_SIZE,
    DTYPES,
    GPU_MEMORY_UTILIZATION,
    MAX_BATCH_TOKENS,
    SCORE_LOGITS_BUDGET,
    dtype_name,
    train_dtype_name,
)
from stages.runtime.registry import flow_plan, tree_level

CUDA_CONTEXT_BYTES = 2**29
"""The flow process's CUDA context with cuBLAS's workspace: about 0.5 GiB under CUDA 12 (an estimate: this
project's machines have no GPU to measure it on)."""
CPU_STAGES = frozenset({"prompts", "partition", "advantages", "tree-advantages", "credit", "critic-init"})
"""Stages that put nothing on the GPU (critic-init builds the critic on the CPU)."""


@dataclass(frozen=True)
class Part:
    """One thing on the GPU: what it is, and its bytes."""

    name: str
    bytes: int


@dataclass(frozen=True)
class Phase:
    """Parts a stage allocates together, above what is resident; a stage's phases come one after another."""

    name: str
    parts: tuple[Part, ...]

    @property
    def bytes(self) -> int:
        return sum(part.bytes for part in self.parts)


@dataclass(frozen=True)
class StagePlan:
    """A stage's resident bytes and its phases; its peak is the resident bytes and its largest phase."""

    stage: str
    resident: int
    phases: tuple[Phase, ...]

    @property
    def peak(self) -> int:
        return self.resident + max((phase.bytes for phase in self.phases), default=0)


@dataclass(frozen=True)
class MemoryPlan:
    total: int
    """The GPU's memory in bytes."""
    header: str
    resident: tuple[tuple[Part, str], ...]
    """Each resident part and the stage from which it is held."""
    stages: tuple[StagePlan, ...]
    vllm: tuple[Part, Part] | None
    """vLLM's share of the GPU and the least it must hold before it starts (None: no vLLM)."""
    autocast: bool
    """The train stage computes under bf16 autocast."""
    architecture: tuple[Architecture, str]
    """The policy's architecture and where it was read (`architecture`)."""

    def worst(self) -> StagePlan:
        return max(self.stages, key=lambda stage: stage.peak)

    def problem(self) -> str | None:
        """Why the plan cannot run on this GPU, in one line; None when it fits."""
        if self.vllm is not None and self.vllm[0].bytes < self.vllm[1].bytes:
            share, floor = self.vllm
            return (f"memory plan: stage evaluate: the {share.name} ({gib(share.bytes)} GiB, {share.bytes:,} bytes) "
                    f"cannot hold {floor.name} ({gib(floor.bytes)} GiB, {floor.bytes:,} bytes), which vLLM needs "
                    f"before it starts")
        worst = self.worst()
        if worst.peak <= self.total:
            return None
        phase = max(worst.phases, key=lambda p: p.bytes, default=Phase("", ()))
        parts = sorted([*held(self.resident, worst.stage), *phase.parts], key=lambda part: -part.bytes)
        return (f"memory plan: stage {worst.stage} needs {gib(worst.peak)} GiB ({worst.peak:,} bytes) of the GPU's "
                f"{gib(self.total)} GiB ({self.total:,} bytes), mostly "
                + ", ".join(f"{part.name} {gib(part.bytes)}" for part in parts[:4]))

    def text(self) -> str:
        lines = [self.header, "", f"{'resident':<66}{'GiB':>8}  held from"]
        lines += [f"  {part.name:<64}{gib(part.bytes):>8}  {since}" for part, since in self.resident]
        lines += ["", f"{'stage':<16}{'resident':>9}{'working':>9}{'peak':>9}{'free':>9}  largest working phase (GiB)"]
        for stage in self.stages:
            phase = max(stage.phases, key=lambda p: p.bytes, default=None)
            what = "-" if phase is None else f"{phase.name}: " + " + ".join(
                f"{part.name} {gib(part.bytes)}" for part in phase.parts)
            lines.append(f"{stage.stage:<16}{gib(stage.resident):>9}{gib(stage.peak - stage.resident):>9}"
                         f"{gib(stage.peak):>9}{gib(self.total - stage.peak):>9}  {what}")
        return "\n".join(lines)


def gib(count: int) -> str:
    return f"{count / GiB:.2f}"


def architecture(cfg: RunConfig) -> tuple[Architecture, str]:
    """The policy's architecture and where it was read: a local folder's config.json, the Hugging Face cache's,
    the published one of a rehearsal family (spo/policy/rehearsal.py), or the tiny model's settings."""
    path = cfg.model.path
    if not path:
        return _tiny_architecture(cfg), "model.tiny"
    if Path(path).is_dir():
        return Architecture.from_config(json.loads((Path(path) / "config.json").read_text())), f"{path}/config.json"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, "config.json")
    if isinstance(cached, str):
        return Architecture.from_config(json.loads(Path(cached).read_text())), cached
    from spo.policy.families import FAMILIES, config_json, family_of

    try:
        family = FAMILIES[family_of(path)]
    except ValueError as error:
        raise ConfigError(f"model.path = {path!r}: no config.json in the Hugging Face cache, and {error}") from None
    stand_in = f"; vocabulary of the rehearsal stand-in: {family.substitute}" if family.substitute else ""
    return (Architecture.from_config(config_json(family.name)),
            f"the published {family.name} architecture (spo/policy/rehearsal.py){stand_in}")


def _tiny_architecture(cfg: RunConfig) -> Architecture:
    """The Llama `spo.policy.tiny.build_tiny_model` builds: untied, a key and value head per head; the
    character vocabulary of the task's text, or at most `bpe_vocab_size` pieces."""
    from spo.policy.tiny import char_vocabulary
    from stages.runtime.resources import load_task

    tiny = cfg.model.tiny
    if tiny.tokenizer == "bpe":
        vocab = tiny.bpe_vocab_size
    else:
        task = load_task(cfg)
        vocab = len(char_vocabulary([*task.corpus("train"), *task.corpus("test")]))
    return Architecture.from_config({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": tiny.hidden_size,
        "num_hidden_layers": tiny.num_layers, "num_attention_heads": tiny.num_heads,
        "intermediate_size": tiny.intermediate_size, "max_position_embeddings": tiny.max_position_embeddings})


@dataclass(frozen=True)
class _Shape:
    """What the parts' bytes depend on, resolved for a GPU."""

    arch: Architecture
    params: int
    sample_bytes: int
    """Bytes per weight of the sampler and of vLLM's scoring copy (`model.dtype` on a GPU)."""
    sample_dtype: str
    autocast: bool
    """The train stage computes under bf16 autocast (`train.precision` on a GPU)."""
    context: int
    response: int
    """Scored tokens of a row at most: min(max_new_tokens, context - 1)."""
    rows: int
    """The transformers engine's most rows per batch (its default: no config sets it)."""
    batch_tokens: int
    """The transformers engine's most tokens per batch (its default)."""
    logits_budget: int


def _shape(cfg: RunConfig, arch: Architecture) -> _Shape:
    sample = dtype_name(cfg.model.dtype, on_gpu=True)
    context = cfg.sample.context_size
    return _Shape(arch, parameter_count(arch), DTYPES[sample], sample,
                  train_dtype_name(cfg.train.precision, cfg.model.dtype, on_gpu=True) == "bfloat16", context,
                  min(cfg.sample.max_new_tokens, context - 1), BATCH_SIZE, MAX_BATCH_TOKENS, SCORE_LOGITS_BUDGET)


def _resident(cfg: RunConfig, x: _Shape, total: int) -> tuple[list[tuple[Part, str]], tuple[Part, Part] | None]:
    """The parts the engine pool holds, each with the stage it arrives in; and vLLM's share with its least."""
    p = x.params
    resident = [(Part("CUDA context (estimate)", CUDA_CONTEXT_BYTES), "warmstart"),
                (Part(f"trainer weights, float32 ({p:,} parameters)", 4 * p), "warmstart")]
    vllm = None
    if cfg.model.engine == "vllm":
        fraction = cfg.model.vllm_options.get("gpu_memory_utilization", GPU_MEMORY_UTILIZATION)
        longest = cfg.model.vllm_options.get("max_model_len", x.arch.max_positions)
        vllm = (Part(f"vLLM share, gpu_memory_utilization {fraction:.2f} of the GPU", int(fraction * total)),
                Part(f"its {x.sample_dtype} weights and the keys and values of one {longest:,}-token sequence "
                     f"(max_model_len)", p * x.sample_bytes + longest * kv_bytes_per_token(x.arch, x.sample_bytes)))
        resident += [(vllm[0], "evaluate 0"), (Part(f"vLLM's scoring copy, {x.sample_dtype}", p * x.sample_bytes),
                                               "evaluate 0")]
    else:
        resident.append((Part(f"sampler weights, {x.sample_dtype}", p * x.sample_bytes), "evaluate 0"))
    resident += [(Part("gradients, float32 (freed at the next step's start)", 4 * p), "train 0"),
                 (Part("AdamW moments, 2 x float32", 8 * p), "train 0")]
    if cfg.train.kl_coef > 0:
        resident.append((Part(f"KL reference, {'bfloat16' if x.autocast else 'float32'}",
                              (2 if x.autocast else 4) * p), "train 0"))
    return resident, vllm


def _working_sets(cfg: RunConfig, x: _Shape) -> dict[str, tuple[Phase, ...]]:
    """The phases of each stage that uses the GPU, by stage name."""
    arch, p, micro, context, response = x.arch, x.params, cfg.train.micro_batch_size, x.context, x.response

    def scoring(dtype_bytes: int, label: str) -> Part:  # a batch holds at least one row
        tokens = max(context, min(x.batch_tokens, x.rows * context))
        logits = max(response * arch.vocab, min(x.logits_budget, min(x.batch_tokens, x.rows * response) * arch.vocab))
        return Part(label, scoring_bytes(arch, tokens, logits, dtype_bytes))

    samples = max(cfg.sample.samples_per_question, cfg.resample.k, *cfg.tree.branching, cfg.eval.samples_per_question)
    cached = max(x.batch_tokens, context * (1 + min(x.rows, samples)))  # a batch holds at least one group
    sampling = () if cfg.model.engine == "vllm" else (Phase("sampling", (Part(
        f"transformers sampler: keys and values of {cached:,} tokens and a step of {x.rows} rows",
        sampling_bytes(arch, cached, x.rows, x.sample_bytes)),)),)
    scored = (*sampling, Phase("scoring", (scoring(x.sample_bytes, "teacher-forced scoring"),)))
    copies = (Part("bf16 autocast weight copies", autocast_copy_bytes(arch)),) if x.autocast else ()
    step = Part("AdamW step temporaries", ADAMW_STEP_BYTES * p)
    critic = p - (0 if arch.tied else arch.vocab * arch.hidden) + arch.hidden + 1  # the decoder, a value head
    critic_state = Part("critic weights, gradients and AdamW, float32", 16 * critic)
    rerun = cfg.train.activation_checkpointing  # the layers keep their inputs only (spo.memory.rerun_bytes)
    how = ", layers rerun in the backward" if rerun else ""
    activations = Part(f"activations of {micro} x {context} tokens ({response} scored){how}",
                       training_pass_bytes(arch, micro, context, response, x.autocast, checkpointed=rerun))
    critic_activations = Part(f"critic activations of {micro} x {context} tokens{how}", training_pass_bytes(
        arch, micro, context, response, False, output_layer=False, checkpointed=rerun))
    phases = {
        "evaluate": sampling, "resample": sampling, "generate": scored,
        **{tree_level(d): scored for d in range(1, len(cfg.tree.branching) + 1)},
        "train": (
            Phase("micro-batch", (*copies, activations)),
            Phase("AdamW step", (*copies, step)),
            *((Phase("reference scoring", (scoring(2 if x.autocast else 4, "KL reference scoring"),)),)
              if cfg.train.kl_coef > 0 else ())),
        "critic-values": (Phase("critic scoring", (
            Part("critic weights, float32", 4 * critic),
            Part("critic pass of 64 rows", inference_pass_bytes(arch, 64 * context, 4)))),),
        "critic-train": (
            Phase("critic micro-batch", (critic_state, critic_activations)),
            Phase("critic AdamW step", (critic_state, Part("AdamW step temporaries", ADAMW_STEP_BYTES * critic)))),
        "warmstart": (),
    }
    w = cfg.warmstart
    if w.enabled:  # SFT in float32 without autocast, its own AdamW, a copy of the best weights, greedy checks
        sft = Part("SFT gradients, AdamW and a kept copy of the weights", 16 * p)
        phases["warmstart"] = (
            Phase("SFT batch", (sft, Part(f"activations of {w.batch_size} x {context} tokens",
                                          training_pass_bytes(arch, w.batch_size, context, response, False)))),
            Phase("SFT AdamW step", (sft, step)),
            Phase("held-out check", (sft, Part("transformers sampling, float32",
                                               sampling_bytes(arch, cached, x.rows, 4)))))
    return phases


def memory_plan(cfg: RunConfig, total: int, known: tuple[Architecture, str] | None = None) -> MemoryPlan:
    """The plan of `cfg`'s flow on a GPU of `total` bytes (the module docstring says what is resident when);
    `known`: `cfg`'s architecture, already read."""
    if cfg.train.world_size > 1 or cfg.launch.dask_workers or cfg.launch.dask_scheduler:
        raise ConfigError("memory plan: train.world_size > 1 and Dask sampling run stages in other processes, "
                          "which the plan does not model; plan with train.world_size = 1 and no launch.dask_*")
    arch, source = known or architecture(cfg)
    x = _shape(cfg, arch)
    resident, vllm = _resident(cfg, x, total)
    working = _working_sets(cfg, x)
    names = list(dict.fromkeys(stage for step in flow_plan(cfg, range(1)) for stage, _ in step))
    stages = []
    for name in names:
        if name in CPU_STAGES:
            continue
        if name not in working:
            raise ValueError(f"memory plan: stage {name!r} has no memory model (stages/runtime/memory_plan.py)")
        stages.append(StagePlan(name, sum(part.bytes for part in held(resident, name)), working[name]))
    header = "\n".join([
        f"memory plan of {cfg.name} on a GPU of {gib(total)} GiB ({total:,} bytes)",
        (f"model {cfg.model.path or 'model.tiny'}: {arch.layout}, {arch.layers} layers, hidden {arch.hidden}, "
         f"vocabulary {arch.vocab:,}, {'tied' if arch.tied else 'untied'}: {x.params:,} parameters, from {source}"),
        (f"sampler {cfg.model.engine} in {x.sample_dtype}; train.precision {'bf16' if x.autocast else 'fp32'} "
         f"(float32 weights{', bfloat16 autocast' if x.autocast else ''}); train.kl_coef {cfg.train.kl_coef}"),
        ("the engine pool keeps every role live for the whole flow: a stage after the first train stage holds "
         "every resident part (iteration 0's, fewer); stages " + ", ".join(n for n in names if n in CPU_STAGES)
         + " use no GPU"),
    ])
    return MemoryPlan(total, header, tuple(resident), tuple(stages), vllm, x.autocast, (arch, source))


def held(resident: list[tuple[Part, str]] | tuple[tuple[Part, str], ...], stage: str) -> list[Part]:
    """The resident parts a stage holds: the warm start only those that arrive with it."""
    return [part for part, since in resident if stage != "warmstart" or since == "warmstart"]


def check_memory_plan(cfg: RunConfig, total: int) -> MemoryPlan:
    """The plan of `cfg` on a GPU of `total` bytes, or `ConfigError` in one line: the stage, the bytes it needs
    and those there are, and the settings that would fit."""
    plan = memory_plan(cfg, total)
    problem = plan.problem()
    if problem is None:
        return plan
    fixes = [" ".join(f"--set {change}" for change in changes) for changes in fitting_changes(cfg, total, plan)]
    raise ConfigError(f"{problem}; fits with {' or '.join(fixes)}" if fixes else
                      f"{problem}; no setting of train.activation_checkpointing, train.micro_batch_size, vLLM's "
                      f"gpu_memory_utilization and max_model_len, and train.precision fits")


def fitting_changes(cfg: RunConfig, total: int, plan: MemoryPlan) -> list[list[str]]:
    """`--set` changes that make the plan fit (quoted for a shell): each alone where one does (activation
    checkpointing, first: it changes no number; the largest smaller micro-batch that divides the batch; bf16
    over fp32; the largest vLLM share that leaves the rest room and holds vLLM's least, or max_model_len =
    sample.context_size), else together: activation checkpointing, bf16, the largest micro-batch with which a
    vLLM share fits, and that share."""
    def fits(changes: list[str]) -> bool:
        return plan_of(changes).problem() is None

    def plan_of(changes: list[str]) -> MemoryPlan:  # none of them changes the architecture
        return memory_plan(cfg.with_overrides([c.strip("'") for c in changes]), total, plan.architecture)

    t, singles = cfg.train, []
    rerun = [] if t.activation_checkpointing else ["train.activation_checkpointing=true"]
    if rerun and fits(rerun):
        singles.append(rerun)
    micros = [m for m in range(t.micro_batch_size - 1, 0, -1) if t.batch_size % m == 0]
    micro = next((m for m in micros if fits([f"train.micro_batch_size={m}"])), None)
    if micro is not None:
        singles.append([f"train.micro_batch_size={micro}"])
    if not plan.autocast and fits(["train.precision=bf16"]):
        singles.append(["train.precision=bf16"])
    singles += [[change] for change in vllm_changes(cfg, total, plan) if fits([change])]
    if singles:
        return singles
    together = [*rerun, *([] if plan.autocast else ["train.precision=bf16"])]
    for m in [t.micro_batch_size, *micros]:
        changes = [*([f"train.micro_batch_size={m}"] if m != t.micro_batch_size else []), *together]
        changes += vllm_changes(cfg, total, plan_of(changes))
        if len(changes) > 1 and fits(changes):
            return [changes]
    return []


def vllm_changes(cfg: RunConfig, total: int, plan: MemoryPlan) -> list[str]:
    """The largest vLLM share that leaves the other parts of `plan` room (the share is in every stage's resident
    set but the warm start's) and still holds vLLM's least; and max_model_len = sample.context_size where
    vLLM's least does not fit its share."""
    if plan.vllm is None:
        return []
    share, floor = plan.vllm
    room = min(total - (stage.peak - share.bytes) for stage in plan.stages if stage.stage != "warmstart")
    fraction, options = int(100 * room / total) / 100, cfg.model.vllm_options
    changes = []
    if fraction * total >= floor.bytes and fraction > 0:
        changes.append("'model.vllm_options=" + json.dumps({**options, "gpu_memory_utilization": fraction}) + "'")
    if share.bytes < floor.bytes:
        changes.append("'model.vllm_options=" + json.dumps({**options, "max_model_len": cfg.sample.context_size}) + "'")
    return changes
