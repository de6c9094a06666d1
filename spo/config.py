"""Typed run configuration: one frozen dataclass per concern, composed into `RunConfig`.

Defaults are the reference's SPO-chain GSM8K values (docs/design.md#presets) unless a field says
otherwise; presets (`data/presets/*.toml`) are plain overrides of these fields. Core functions never
take a config: stages read the fields they need and pass plain values.

>>> cfg = RunConfig().with_overrides(["sample.temperature=0.7", "iterations=3"])
>>> cfg.sample.temperature, cfg.iterations
(0.7, 3)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A config field has a value the pipeline cannot run with; the message names the field."""


def _rule(test: Callable[[Any], bool], expected: str | Callable[[], str]) -> dict:
    """Field metadata: the value must pass `test`; `expected` describes what passes (for the error)."""
    return {"check": (test, expected)}


def at_least(low: float) -> dict:
    return _rule(lambda v: v >= low, f">= {low}")


def above(low: float) -> dict:
    return _rule(lambda v: v > low, f"> {low}")


def within(low: float, high: float, open_low: bool = False, open_high: bool = False) -> dict:
    """low <= v <= high, either end open."""
    def test(v):
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return _rule(test, f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}")


FRONTIER = {"frontier": True}
"""Field metadata: the field only affects work not yet done (where and how work runs, what is logged and kept,
how far the run goes). No stage key reads it, so a changed value applies from a run's frontier and never
makes finished stages stale (docs/architecture.md#history)."""


ADDED = {"added": True}
"""Field metadata: the field came after runs were made. At its default it is left out of stage keys, so the
stages finished before it existed keep their keys (docs/architecture.md#history)."""


def one_of(names: Callable[[], Any]) -> dict:
    """v is a key of a registry, read when checked (registries import their modules lazily)."""
    return _rule(lambda v: v in names(), lambda: f"one of {sorted(names())}")


class _Checked:
    """Checks every field that carries a rule when the dataclass is built; `_section` prefixes the name."""

    _section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            if "check" in f.metadata:
                test, expected = f.metadata["check"]
                value = getattr(self, f.name)
                if not test(value):
                    expected = expected() if callable(expected) else expected
                    problems.append(f"{self._section}{f.name} = {value!r}: expected {expected}")
        problems += [] if problems else self._combination_problems()  # combinations of valid values only
        if problems:
            raise ConfigError("; ".join(problems))

    def _combination_problems(self) -> list[str]:
        """Combinations of this section's fields that cannot run (every field valid on its own)."""
        return []


def _partitions():
    from spo.segments import PARTITIONS

    return PARTITIONS


def _advantages():
    from spo.advantages import ADVANTAGES

    return ADVANTAGES


def _lr_schedules():
    from spo.schedules import LR_SCHEDULES

    return LR_SCHEDULES


def _precisions():
    from spo.policy.engine import PRECISIONS

    return PRECISIONS


def _whiten_scopes():
    from spo.whitening import WHITENING

    return WHITENING


def _loss_aggregations():
    from spo.objectives import LOSS_AGGREGATIONS

    return LOSS_AGGREGATIONS


def _ratios():
    from spo.objectives import RATIOS

    return RATIOS


def _algorithms():
    from spo.algorithms import ALGORITHMS

    return ALGORITHMS


def _tokenizer_kinds():
    from spo.policy.tiny import TOKENIZER_KINDS

    return TOKENIZER_KINDS


def _shardings():
    from spo.sharding import SHARDINGS

    return SHARDINGS


def _engines():
    from spo.policy.engine import ENGINES

    return ENGINES


def _dtypes():
    from spo.policy.engine import DTYPES

    return DTYPES


def _tasks():
    from spo.tasks import TASKS

    return TASKS


@dataclass(frozen=True)
class TinyModelConfig(_Checked):
    """A small Llama built locally when `ModelConfig.path` is empty (tests and the CPU demo)."""

    _section: ClassVar[str] = "model.tiny."
    tokenizer: str = field(default="char", metadata=one_of(_tokenizer_kinds))
    """"char" (one token per character of the task's text) or "bpe" (trained on the task's text)."""
    bpe_vocab_size: int = field(default=512, metadata=at_least(64))
    """Vocabulary size of the BPE tokenizer; ignored for "char"."""
    hidden_size: int = field(default=128, metadata=at_least(1))
    """Width of the residual stream; a multiple of `num_heads`."""
    num_layers: int = field(default=4, metadata=at_least(1))
    """Number of transformer blocks."""
    num_heads: int = field(default=4, metadata=at_least(1))
    """Attention heads per block."""
    intermediate_size: int = field(default=512, metadata=at_least(1))
    """Width of the MLP."""
    max_position_embeddings: int = field(default=256, metadata=at_least(2))
    """Longest sequence (prompt + response) the model accepts; at least `sample.context_size`."""

    def _combination_problems(self) -> list[str]:
        if self.hidden_size % self.num_heads:
            return [(f"model.tiny.hidden_size = {self.hidden_size}: expected a multiple of model.tiny.num_heads = "
                     f"{self.num_heads}")]
        return []


_HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"


def is_hub_id(text: str) -> bool:
    """Whether `text` is a well-formed Hugging Face hub id, `owner/name` or `name`, by the hub client's own rules
    (huggingface_hub's `validate_repo_id`): each part 1-96 of letters, digits, '-', '_', '.', starting and ending
    with a letter, digit or '_'; no '--' or '..'; not ending in '.git'.

    >>> is_hub_id("Qwen/Qwen2.5-0.5B-Instruct"), is_hub_id("gpt2"), is_hub_id("/nonexistent"), is_hub_id("a/b/c")
    (True, True, False, False)
    """
    return (re.fullmatch(rf"(?:{_HUB_NAME}/)?{_HUB_NAME}", text) is not None and "--" not in text
            and ".." not in text and not text.endswith(".git"))


@dataclass(frozen=True)
class ModelConfig(_Checked):
    """Which policy to start from and which engine samples it."""

    _section: ClassVar[str] = "model."
    path: str = "realtreetune/rho-1b-sft-GSM8K"
    """Local folder or hub id of a Hugging Face causal LM (reference: RhoMath-1.1B SFT); empty builds `tiny`."""
    engine: str = field(default="transformers", metadata={**one_of(_engines), **FRONTIER})
    """Sampling engine: "transformers" (tested everywhere) or "vllm" (optional extra)."""
    dtype: str = field(default="auto", metadata=one_of(lambda: ("auto", *_dtypes())))
    """"auto" (bf16 on GPU, float32 on CPU), "float32", "bfloat16" or "float16"."""
    device: str = field(default="auto", metadata={**_rule(lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                                                          "'auto', 'cpu', 'cuda' or 'cuda:N'"), **FRONTIER})
    """"auto", "cpu", "cuda" or "cuda:N"."""
    vllm_options: dict[str, Any] = field(default_factory=dict, metadata=FRONTIER)
    """Extra keyword arguments of `vllm.LLM` when `engine = "vllm"` (e.g. {"enforce_eager": true})."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the locally built model when `path` is empty."""


@dataclass(frozen=True)
class TaskConfig(_Checked):
    """The task the policy is trained and evaluated on."""

    _section: ClassVar[str] = "task."
    name: str = field(default="gsm8k", metadata=one_of(_tasks))
    """A registered task: "arith", "gsm8k", "math500" or one a user registered."""
    data: str = ""
    """Where a file-backed task (gsm8k, math500) reads its rows; empty means its folder in the data folder beside
    the checkout (data/README.md). A folder of `<split>.jsonl|json|parquet|csv`, a file or glob used for every
    split (`{split}` in it becomes the split name), or a Hugging Face hub id (the `datasets` extra). Name other
    columns with `task.options.columns` ({"question": "problem"}) and other hub splits with
    `task.options.splits` ({"test": "validation"})."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the task factory (e.g. arith's `n_operands`, `digits`; the file-backed
    tasks' `columns` and `splits`; math500's `checker`)."""


@dataclass(frozen=True)
class PromptConfig(_Checked):
    """How a question becomes the prompt's token ids (docs/design.md#prompts)."""

    _section: ClassVar[str] = "prompt."
    chat_template: bool = False
    """Build the prompt with the tokenizer's chat template, as instruct models expect: `apply_chat_template`
    of a system message (when `system` is set) and the task's user message, with the generation prompt; the
    token ids it returns are the prompt (never re-tokenized text). False uses the task's plain prompt text."""
    system: str = ""
    """System message of the chat template; empty sends none."""


@dataclass(frozen=True)
class SampleConfig(_Checked):
    """Rollout sampling, per iteration (docs/design.md#question-sampling)."""

    _section: ClassVar[str] = "sample."
    questions_per_iteration: int = field(default=64, metadata=at_least(1))
    """Training questions drawn (with replacement across iterations) per iteration."""
    samples_per_question: int = field(default=8, metadata=at_least(1))
    """Rollouts N per question."""
    temperature: float = field(default=0.6, metadata=above(0))
    """Sampling temperature (> 0); also the temperature of every recomputed log-prob (docs/design.md#probabilities)."""
    top_p: float = field(default=0.9, metadata=within(0, 1, open_low=True))
    """Nucleus sampling mass (1.0 disables it)."""
    max_new_tokens: int = field(default=1024, metadata=at_least(1))
    """Longest response; a response cut here scores the unfinished penalty."""
    context_size: int = field(default=2047, metadata=at_least(2))
    """Prompt + response limit; `max_new_tokens` is lowered to fit it."""
    dynamic_sampling: bool = field(default=False, metadata=ADDED)
    """DAPO's dynamic sampling (docs/design.md#dynamic-sampling): drop the question groups whose rewards are all
    equal and sample more questions until `questions_per_iteration` groups are kept."""
    dynamic_max_draws: int = field(default=10, metadata={**at_least(0), **ADDED})
    """With `dynamic_sampling`: most extra rounds of `questions_per_iteration` fresh questions per iteration
    (DAPO's `max_num_gen_batches` is 10); fewer groups are trained when they run out."""
    overlong_buffer: int = field(default=0, metadata={**at_least(0), **ADDED})
    """DAPO's overlong reward shaping (docs/design.md#rewards): a response longer than `max_new_tokens` minus
    this many tokens loses up to `overlong_penalty`, linearly in its length; 0 shapes nothing."""
    overlong_penalty: float = field(default=1.0, metadata={**above(0), **ADDED})
    """The penalty at `max_new_tokens` tokens (DAPO: 1)."""

    def _combination_problems(self) -> list[str]:
        problems = []
        if not self.dynamic_sampling and self.dynamic_max_draws != 10:
            problems.append(f"sample.dynamic_max_draws = {self.dynamic_max_draws}: has no effect with "
                            f"sample.dynamic_sampling = false; set it true or leave the default 10")
        if not self.overlong_buffer and self.overlong_penalty != 1.0:
            problems.append(f"sample.overlong_penalty = {self.overlong_penalty}: has no effect with "
                            f"sample.overlong_buffer = 0; set a buffer or leave the default 1.0")
        if self.overlong_buffer > self.max_new_tokens:
            problems.append(f"sample.overlong_buffer = {self.overlong_buffer}: expected at most "
                            f"sample.max_new_tokens = {self.max_new_tokens}")
        return problems


@dataclass(frozen=True)
class PartitionConfig(_Checked):
    """Where responses are cut into segments (spo/segments.py), and which tokens are low-probability."""

    _section: ClassVar[str] = "partition."
    method: str = field(default="cutpoint", metadata=one_of(_partitions))
    """"cutpoint" (SPO-chain), "fixed_count", "fixed_length" (also SPO-tree's levels), "steps" (VinePPO), or
    "none" (GRPO, RLOO, PPO)."""
    tau: float = field(default=0.9, metadata=within(0, 1, open_low=True))
    """Probability threshold: a token with p < tau is a cutpoint and inside the probability mask."""
    interval: int = field(default=5, metadata=at_least(1))
    """Cutpoints per segment ("int" in the paper)."""
    n_segments: int = field(default=4, metadata=at_least(1))
    """Chunks of the "fixed_count" baseline."""
    segment_tokens: int = field(default=30, metadata=at_least(1))
    """Tokens per segment of "fixed_length": M, the length of every SPO-tree level but the last."""
    max_boundaries: int = field(default=0, metadata=at_least(0))
    """Most MC boundaries per rollout; 0 means unlimited, as the reference (docs/design.md#mc-budget)."""
    step_marker: str = field(default="\n", metadata=_rule(bool, "a non-empty string"))
    """What ends a reasoning step for "steps": a newline (GSM8K, MATH); ";" for the arith task's chain."""
    prompt_boundary: bool = False
    """Also cut at 0 (the bare prompt), so the first segment is valued from the prompt (VinePPO)."""


@dataclass(frozen=True)
class ResampleConfig(_Checked):
    """Monte-Carlo value estimation at boundaries (docs/design.md#chain-advantages)."""

    _section: ClassVar[str] = "resample."
    k: int = field(default=9, metadata=at_least(1))
    """Continuations K sampled from each unique boundary prefix."""
    max_estimated: int = field(default=0, metadata=at_least(0))
    """Boundaries per rollout whose value is estimated, the earliest first; later ones take the rollout's
    reward, so their segments get advantage 0 (VinePPO's cap, 25); 0 estimates all."""


@dataclass(frozen=True)
class AdvantageConfig(_Checked):
    """How rewards and values become per-token advantages (spo.advantages.ADVANTAGES)."""

    _section: ClassVar[str] = "advantage."
    method: str = field(default="segment", metadata=one_of(_advantages))
    """spo-chain: "segment" (value difference across each segment), "grpo" or "rloo" (one advantage per
    rollout); spo-tree: "tree" (V(child) - V(parent)) or "tree-normalized" (divided by the siblings' std)."""
    prob_mask: bool = True
    """Give advantage and loss only to tokens with p < tau (the probability mask)."""
    train_on_eos: bool = True
    """Train on a final EOS token (docs/design.md#stop-token); false reproduces the reference, which never does."""
    gamma: float = field(default=1.0, metadata=within(0, 1))
    """"gae": discount of the reward to earlier tokens (reference PPO: 1)."""
    lam: float = field(default=1.0, metadata=within(0, 1))
    """"gae": the GAE lambda (reference PPO: 1, i.e. reward minus value)."""
    group_std: bool = field(default=True, metadata=ADDED)
    """"grpo": divide by the std of the question's rewards (GRPO); false leaves r - mean (Dr. GRPO)."""

    def _combination_problems(self) -> list[str]:
        from spo.advantages import ADVANTAGES

        if not self.group_std and not ADVANTAGES[self.method].group_std:
            readers = sorted(n for n, m in ADVANTAGES.items() if m.group_std)
            return [(f"advantage.group_std = False: expected true with advantage.method = {self.method!r}, "
                     f"which divides by no group std (only {readers} reads it)")]
        return []


@dataclass(frozen=True)
class TreeConfig(_Checked):
    """SPO-tree sampling (docs/design.md#tree-sampling), used when `algorithm = "spo-tree"`; its levels are
    `partition.segment_tokens` long."""

    _section: ClassVar[str] = "tree."
    branching: tuple[int, ...] = field(default=(6, 6, 6), metadata=_rule(lambda v: len(v) >= 1 and min(v) >= 1,
                                                                         "a non-empty list of ints >= 1"))
    """Children per expanded node at each depth; its length is the tree depth."""
    replay_max_age: int = field(default=8, metadata=at_least(1))
    """Edges older than this many iterations leave the replay buffer."""
    replay_per_question: int = field(default=32, metadata=at_least(1))
    """Most edges taken per question per iteration from the replay buffer."""


@dataclass(frozen=True)
class TrainConfig(_Checked):
    """The PPO-clip update (docs/design.md#loss, docs/design.md#optimizer)."""

    _section: ClassVar[str] = "train."
    lr: float = field(default=1e-6, metadata=above(0))
    """Peak AdamW learning rate."""
    warmup_ratio: float = field(default=0.03, metadata=within(0, 1, open_high=True))
    """Fraction of all optimizer steps spent warming up."""
    lr_schedule: str = field(default="linear", metadata={**one_of(_lr_schedules), **ADDED})
    """After the warm-up: "linear" decay to 0 at the last iteration (the reference) or "constant"."""
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_rule(
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"))
    """AdamW betas."""
    grad_clip: float = field(default=1.0, metadata=above(0))
    """Global gradient-norm clip."""
    epochs: int = field(default=2, metadata=at_least(1))
    """Passes over the iteration's episodes."""
    episodes_per_iteration: int = field(default=512, metadata=at_least(0))
    """Episodes trained per iteration: more are dropped, fewer are repeated (docs/design.md#question-sampling);
    0 uses all."""
    batch_size: int = field(default=64, metadata=at_least(1))
    """Episodes per optimizer step."""
    micro_batch_size: int = field(default=8, metadata=at_least(1))
    """Episodes per forward/backward pass (gradient accumulation fills the batch)."""
    clip: float = field(default=0.2, metadata=above(0))
    """PPO ratio clip epsilon."""
    kl_coef: float = field(default=1e-4, metadata=at_least(0))
    """Weight of the k3 KL to the initial policy, in the loss."""
    whiten: str = field(default="micro_batch", metadata=one_of(_whiten_scopes))
    """Advantage standardisation scope: "micro_batch" (reference), "batch" or "none"."""
    loss_agg: str = field(default="reference", metadata={**one_of(_loss_aggregations), **ADDED})
    """How the batch's token losses become one (docs/design.md#policy-loss-choices): "reference" (token mean per
    micro-batch), "token_mean" (DAPO), "seq_mean_token_sum_norm" (Dr. GRPO) or "seq_mean_token_mean" (GSPO)."""
    clip_high: float = field(default=0.0, metadata={**at_least(0), **ADDED})
    """Upper ratio clip: r is clipped to [1 - clip, 1 + clip_high] (DAPO's clip-higher, 0.28); 0 means `clip`."""
    ratio: str = field(default="token", metadata={**one_of(_ratios), **ADDED})
    """Importance ratio: "token" (PPO) or "sequence" (GSPO's per-sequence ratio, applied GSPO-token style)."""
    precision: str = field(default="auto", metadata={**one_of(_precisions), **ADDED})
    """Train-stage compute: "fp32", "bf16" (bfloat16 autocast over float32 weights and AdamW state, the KL
    reference in bfloat16) or "auto" (bf16 where `model.dtype` resolves to bfloat16, i.e. on a GPU)."""
    activation_checkpointing: bool = field(default=False, metadata=FRONTIER)
    """Keep only each decoder layer's input hidden state through a micro-batch's forward and recompute the layer in
    the backward (transformers' gradient checkpointing, non-reentrant; the policy and PPO's critic): one more forward
    of the layers, for a fraction of the activation memory (docs/design.md#memory-plan); the reference trains with it.
    It changes no number (tests/test_ppo.py: bitwise-equal weights after PPO steps, fp32 and bf16 autocast, on a CPU),
    so, like `world_size`, no stage key reads it."""
    world_size: int = field(default=1, metadata={**at_least(1), **FRONTIER})
    """Data-parallel processes of the train stage (torch.distributed.run); 1 trains in the flow's process."""
    sharding: str = field(default="ddp", metadata={**one_of(_shardings), **FRONTIER})
    """With world_size > 1: "ddp" (a full copy per process, gradients summed) or "fsdp" (FSDP2, parameters,
    gradients and optimizer state sharded per decoder layer, for a model that does not fit one device)."""

    def _combination_problems(self) -> list[str]:
        from spo.objectives import LOSS_AGGREGATIONS
        from spo.whitening import WHITENING

        problems = []
        if LOSS_AGGREGATIONS[self.loss_agg].batch_level and WHITENING[self.whiten].per_micro_batch:
            scopes = sorted(n for n, w in WHITENING.items() if not w.per_micro_batch)
            problems.append(f"train.whiten = {self.whiten!r}: expected one of {scopes} with train.loss_agg = "
                            f"{self.loss_agg!r}, which aggregates over the whole batch so that "
                            f"train.micro_batch_size cannot change the update")
        if self.batch_size % self.micro_batch_size:
            problems.append(f"train.batch_size = {self.batch_size}: expected a multiple of train.micro_batch_size = "
                            f"{self.micro_batch_size} (gradient accumulation needs whole micro-batches)")
        elif self.world_size > 1 and (self.batch_size // self.micro_batch_size) % self.world_size:
            problems.append(f"train.world_size = {self.world_size}: expected to divide the "
                            f"{self.batch_size // self.micro_batch_size} micro-batches of a batch "
                            f"(train.batch_size / train.micro_batch_size), so every process takes as many")
        if self.world_size > 1 and (not self.episodes_per_iteration or self.episodes_per_iteration % self.batch_size):
            problems.append(f"train.world_size = {self.world_size} needs train.episodes_per_iteration, now "
                            f"{self.episodes_per_iteration}, to be a positive multiple of train.batch_size = "
                            f"{self.batch_size}: every step must give each process the same work")
        return problems


@dataclass(frozen=True)
class CriticConfig(_Checked):
    """PPO's learned critic (`advantage.method = "gae"`), trained alongside the policy on the same episodes."""

    _section: ClassVar[str] = "critic."
    lr: float = field(default=1e-6, metadata=above(0))
    """Peak AdamW learning rate of the critic (same schedule and batches as the policy)."""
    value_clip: float = field(default=0.2, metadata=above(0))
    """How far an update may move a value before its clipped loss stops pulling (reference: 0.2)."""


@dataclass(frozen=True)
class EvalConfig(_Checked):
    """Held-out evaluation of a checkpoint (docs/design.md#evaluation)."""

    _section: ClassVar[str] = "eval."
    every: int = field(default=10, metadata={**at_least(1), **FRONTIER})
    """Evaluate after every this many iterations (and after the last)."""
    questions: int = field(default=256, metadata=at_least(0))
    """Test questions evaluated (the first ones of the test split); 0 means all."""
    samples_per_question: int = field(default=4, metadata=at_least(0))
    """Sampled answers per question for the mean-over-samples accuracy; 0 skips sampling."""
    temperature: float = field(default=0.35, metadata=above(0))
    """Sampling temperature of the mean-over-samples accuracy."""
    greedy: bool = True
    """Also decode greedily (one answer per question)."""

    def _combination_problems(self) -> list[str]:
        if not self.greedy and not self.samples_per_question:
            return [("eval.greedy = False and eval.samples_per_question = 0: an evaluation with nothing to decode; "
                     "turn on one of them")]
        return []


@dataclass(frozen=True)
class WarmstartConfig(_Checked):
    """Supervised fine-tuning on the task's reference solutions before RL (docs/design.md#warm-start)."""

    _section: ClassVar[str] = "warmstart."
    enabled: bool = False
    """Run SFT; when false checkpoint 0 is the initial model as it is."""
    max_steps: int = field(default=2000, metadata=at_least(1))
    """Most SFT updates, those a rewind abandons included."""
    batch_size: int = field(default=64, metadata=at_least(1))
    """Examples per SFT step."""
    lr: float = field(default=3e-3, metadata=above(0))
    """Peak learning rate (linear warm-up over 50 steps, then constant until `lr_near` applies)."""
    lr_near: float = field(default=0.0, metadata={**at_least(0), **ADDED})
    """Learning rate once a check reached half the band's lower edge, so the model nears the band in small
    steps and the check that stops SFT reads a settled model, not one mid-jump (docs/design.md#warm-start);
    0 keeps `lr`."""
    eval_every: int = field(default=25, metadata=at_least(1))
    """Steps between held-out greedy accuracy checks."""
    eval_every_near: int = field(default=0, metadata={**at_least(0), **ADDED})
    """Steps between checks once a check reached half the band's lower edge (a tiny model's accuracy can
    cross the band between two checks, docs/design.md#warm-start); 0 keeps `eval_every`."""
    eval_questions: int = field(default=256, metadata=at_least(1))
    """Held-out training questions (never trained on) used for the band check."""
    band: tuple[float, float] = field(default=(0.2, 0.4), metadata=_rule(
        lambda v: len(v) == 2 and 0.0 <= v[0] <= v[1] <= 1.0, "[low, high] with 0 <= low <= high <= 1"))
    """Stop once held-out greedy accuracy is inside [low, high]; past it, rewind to the last check below and
    check twice as often (docs/design.md#warm-start)."""


@dataclass(frozen=True)
class LaunchConfig(_Checked):
    """Where the work runs (docs/architecture.md#scale-out). No stage key reads it: a result does not depend
    on how many machines computed it."""

    _section: ClassVar[str] = "launch."
    torchrun_args: tuple[str, ...] = ()
    """Extra arguments of torch.distributed.run for train.world_size > 1 over several nodes (--nnodes,
    --node-rank, --rdzv-backend, --rdzv-endpoint); empty runs on this machine (--standalone)."""
    dask_scheduler: str = field(default="", metadata=_rule(lambda v: not v or re.fullmatch(
        r"(tcp|tls|ucx|inproc)://\S+", v), "a Dask address such as 'tcp://10.0.0.5:8786'"))
    """Address of a Dask scheduler (tcp://host:8786) whose workers sample; empty samples in this process."""
    dask_workers: int = field(default=0, metadata=at_least(0))
    """Without a scheduler address: start a local Dask cluster of this many workers (127.0.0.1) to sample;
    0 samples in this process."""
    dask_threads: int = field(default=1, metadata=at_least(1))
    """torch threads of each local Dask worker."""


@dataclass(frozen=True)
class RetentionConfig(_Checked):
    """What a run keeps on disk as it goes (docs/architecture.md#retention)."""

    _section: ClassVar[str] = "retention."
    optimizer_states: int = field(default=1, metadata=at_least(0))
    """Optimizer states kept, the newest first (only a resume reads them, and it reads the newest); 0 keeps all."""
    checkpoints: int = field(default=0, metadata=at_least(0))
    """After each iteration remove all checkpoints but the newest N, checkpoint 0 and the evaluated ones (as
    `spo gc --keep-last N`); 0 keeps every checkpoint."""
    optimizer_every: int = field(default=1, metadata=at_least(1))
    """Write the AdamW state of every N-th checkpoint and of the last; in between the flow keeps it in memory
    and its manifest is a tombstone, and a train stage without it replays the train stages since the newest
    state written (docs/architecture.md#write-behind). 1 writes every one."""


@dataclass(frozen=True)
class LogConfig(_Checked):
    """Experiment trackers, fed from the run's stored artifacts after each iteration (docs/architecture.md#trackers).
    No stage key reads it: turning a tracker on never reruns a stage."""

    _section: ClassVar[str] = "log."
    tensorboard: bool = False
    """Write TensorBoard event files under `<run>/tensorboard/` (the `trackers` extra): `tensorboard --logdir`."""
    wandb: bool = False
    """Log to Weights & Biases (the `trackers` extra); with WANDB_MODE=offline it writes a local run under
    `<run>/wandb/` that `wandb sync` uploads later."""
    wandb_project: str = field(default="spo", metadata=_rule(lambda v: bool(v.strip()), "a non-empty name"))
    """Weights & Biases project of the run."""
    samples_every: int = field(default=10, metadata=at_least(0))
    """Every this many iterations, also log a table of decoded completions with their segments and advantages;
    0 never."""
    samples: int = field(default=4, metadata=at_least(1))
    """Completions in each such table (the first episodes of the iteration)."""


@dataclass(frozen=True)
class RunConfig(_Checked):
    """Everything a run needs; stored resolved in `run.json`."""

    name: str = field(default="run", metadata={**_rule(lambda v: bool(v.strip()), "a non-empty name"), **FRONTIER})
    """Run name; the run directory defaults to `data/runs/<name>`."""
    seed: int = field(default=42, metadata=at_least(0))
    """Run seed; every sampling request derives its own seed from it (docs/design.md#seeds)."""
    algorithm: str = field(default="spo-chain", metadata=one_of(_algorithms))
    """"spo-chain" (also GRPO/RLOO/baselines, by partition and advantage) or "spo-tree"."""
    iterations: int = field(default=1000, metadata={**at_least(1), **FRONTIER})
    """Policy iterations; also the horizon of the learning-rate decay from the iteration where it was set on
    (docs/design.md#optimizer): raising it extends a run."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig, metadata=FRONTIER)
    launch: LaunchConfig = field(default_factory=LaunchConfig, metadata=FRONTIER)
    log: LogConfig = field(default_factory=LogConfig, metadata=FRONTIER)

    def _combination_problems(self) -> list[str]:
        return _cross_field_problems(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        """Build from a (possibly partial) dict; unknown keys and bad values are errors naming `where`."""
        try:
            return build_table(cls, data, where)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    def with_overrides(self, assignments: list[str], where: str = "--set") -> RunConfig:
        """Apply `section.field=value` strings (spo/overrides.py); values are parsed by the field's type."""
        from spo.overrides import apply_overrides

        return RunConfig.from_dict(apply_overrides(self.to_dict(), RunConfig, assignments, where), where)

    def section_hash(self, *names: str) -> str:
        """Short content hash of the named fields or sections, dotted for nested ones (stage cache keys), without
        their frontier fields (`FRONTIER`) nor the `added` fields at their defaults.

        >>> RunConfig().section_hash("sample.top_p") == RunConfig(seed=1).section_hash("sample.top_p")
        True
        >>> RunConfig().section_hash("eval") == RunConfig(eval=EvalConfig(every=5)).section_hash("eval")
        True
        >>> RunConfig().section_hash("seed", "train.ratio") == RunConfig().section_hash("seed")
        True
        """
        data = self.to_dict()
        added = added_fields()
        dropped = set()
        for name in [*frontier_fields(), *added]:
            *path, leaf = name.split(".")
            node = data
            for part in path:
                node = node[part]
            if name not in added or node[leaf] == added[name]:
                node.pop(leaf)
                dropped.add(name)
        chosen = {}
        for name in names:
            if name in frontier_fields():
                raise ValueError(f"{name}: a frontier field (spo.config.FRONTIER) is never part of a stage key")
            if name in dropped:  # an added field at its default, named alone: the key it had before the field
                continue
            value = data
            for part in name.split("."):
                value = value[part]
            chosen[name] = value
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _cross_field_problems(cfg: RunConfig) -> list[str]:
    """Combinations of fields that cannot run, or would run without doing what they say."""
    from spo.advantages import ADVANTAGES, methods_for
    from spo.algorithms import ALGORITHMS
    from spo.tasks import make_task

    problems = []
    if cfg.retention.optimizer_every > 1 and cfg.train.world_size > 1:
        problems.append(f"retention.optimizer_every = {cfg.retention.optimizer_every} needs train.world_size = 1: "
                        f"a distributed train stage cannot replay the optimizer states it did not write")
    method = ADVANTAGES[cfg.advantage.method]
    if method.algorithm != cfg.algorithm:
        problems.append(f"advantage.method = {cfg.advantage.method!r} works on {method.algorithm} samples, but "
                        f"algorithm = {cfg.algorithm!r}; choose one of {methods_for(cfg.algorithm)}")
    else:
        problems += ALGORITHMS[cfg.algorithm].problems(cfg)
    if cfg.prompt.system and not cfg.prompt.chat_template:
        problems.append(f"prompt.system = {cfg.prompt.system!r} is set, but prompt.chat_template = false sends no "
                        f"system message; set prompt.chat_template = true or leave prompt.system empty")
    if cfg.prompt.chat_template and not cfg.model.path and cfg.model.tiny.tokenizer == "char":
        problems.append("prompt.chat_template = true with model.tiny.tokenizer = 'char': the character tokenizer "
                        "knows only the task's characters, not the template's; use model.tiny.tokenizer = 'bpe'")
    if not cfg.model.path and cfg.model.tiny.max_position_embeddings < cfg.sample.context_size:
        problems.append(f"sample.context_size = {cfg.sample.context_size} exceeds the tiny model's "
                        f"model.tiny.max_position_embeddings = {cfg.model.tiny.max_position_embeddings}")
    try:
        make_task(cfg.task.name, **cfg.task.options)
    except (TypeError, ValueError) as error:
        problems.append(f"task.options = {cfg.task.options!r} for task {cfg.task.name!r}: {error}")
    return problems


def choice_fields() -> dict[str, dict[str, frozenset[str]]]:
    """The fields only some choices read: for each field that picks a registry entry, each entry -> the fields
    (dotted, or whole sections) of those that it reads. Each registry declares its own: a task with a
    `data_folder` reads `task.data`, an algorithm its `reads`, an advantage method its `fields`, a partition its
    `params` (but `tau`, which the probability mask reads whatever the partition).

    >>> sorted(choice_fields()["algorithm"]["spo-tree"]), sorted(choice_fields()["partition.method"]["cutpoint"])
    (['tree'], ['partition.interval', 'partition.max_boundaries'])
    """
    from spo.advantages import ADVANTAGES
    from spo.algorithms import ALGORITHMS
    from spo.segments import PARTITIONS
    from spo.tasks import TASKS

    return {
        "task.name": {name: frozenset(["task.data"] if getattr(factory, "data_folder", None) else [])
                      for name, factory in TASKS.items()},
        "algorithm": {name: frozenset(algorithm.reads) for name, algorithm in ALGORITHMS.items()},
        "advantage.method": {name: method.fields for name, method in ADVANTAGES.items()},
        "partition.method": {name: frozenset(f"partition.{p}" for p in partition.params if p != "tau")
                             for name, partition in PARTITIONS.items()},
    }


def unread_fields(cfg: RunConfig, names: list[str]) -> dict[str, str]:
    """Each of `names` (fields set explicitly: `--set` keys, the fields of a preset file) that only some choices
    read (`choice_fields`) and the choices in force do not -> why, in one line. Defaults are never refused.

    >>> cfg = RunConfig().with_overrides(["task.name=arith", "task.data=rows.jsonl"])
    >>> print(unread_fields(cfg, ["task.name", "task.data", "seed"])["task.data"])
    task.data = 'rows.jsonl' is set, but task.name = 'arith' never reads it (only task.name in ['gsm8k', 'math500'] does); remove it, or choose one of those
    """
    data = cfg.to_dict()
    problems = {}
    for choice, reads in choice_fields().items():
        chosen = _dotted(data, choice)
        for name in names:
            field = next((f for f in sorted(set().union(*reads.values())) if name == f or name.startswith(f + ".")),
                         None)
            if field is None or field in reads[chosen] or name in problems:
                continue
            readers = sorted(n for n, r in reads.items() if field in r)
            value = _dotted(data, name)
            problems[name] = (f"{name if isinstance(value, dict) else f'{name} = {value!r}'} is set, but {choice} = "
                              f"{chosen!r} never reads it (only {choice} in {readers} does); remove it, or choose "
                              f"one of those")
    return problems


def check_read(cfg: RunConfig, names: list[str], where: str) -> RunConfig:
    """`cfg`, once every field of `names` is read by its choices (`unread_fields`); else a ConfigError naming
    `where` and each field."""
    problems = unread_fields(cfg, names)
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems.values())}")
    return cfg


def _dotted(data: dict[str, Any], name: str) -> Any:
    for part in name.split("."):
        data = data[part]
    return data


def build_table(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build config dataclass `cls` from a parsed table (TOML, JSON); every bad field is reported at once."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} in {cls.__name__}; known: {sorted(names)}")
    kwargs, problems = {}, []
    for name, value in data.items():  # every bad field of every section, reported together
        try:
            kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ConfigError("; ".join(problems))
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return build_table(kind, value, where)
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(kind)
        item = args[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


@functools.cache
def frontier_fields() -> frozenset[str]:
    """Dotted names of the fields (or whole sections) marked `FRONTIER`.

    >>> sorted(n for n in frontier_fields() if n.startswith("model."))
    ['model.device', 'model.engine', 'model.vllm_options']
    """
    return frozenset(_marked("frontier"))


def added_fields() -> dict[str, Any]:
    """Dotted name -> default of the fields marked `added`.

    >>> added_fields()["train.lr_schedule"]
    'linear'
    """
    return {name: f.default for name, f in _marked("added").items()}


@functools.cache
def _marked(mark: str, cls: type | None = None, prefix: str = "") -> dict[str, dataclasses.Field]:
    cls = cls or RunConfig
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(mark):
            out[prefix + f.name] = f
        elif dataclasses.is_dataclass(hints[f.name]):
            out |= _marked(mark, hints[f.name], f"{prefix}{f.name}.")
    return out


def changed_fields(old: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted name -> (old, new) of every leaf field (or whole `options`-like dict) whose value differs.

    >>> changed_fields(RunConfig(), RunConfig().with_overrides(["train.lr=2e-6", "iterations=5"]))
    {'iterations': (1000, 5), 'train.lr': (1e-06, 2e-06)}
    """
    def value(data: dict, name: str) -> Any:
        for part in name.split("."):
            data = data[part]
        return data

    before, after = old.to_dict(), new.to_dict()
    return {name: (value(before, name), value(after, name)) for name, _, _ in sorted(field_docs())
            if value(before, name) != value(after, name)}


def is_frontier(name: str) -> bool:
    """Whether dotted field `name` is, or lies in, a frontier field or section."""
    parts = name.split(".")
    return any(".".join(parts[:k]) in frontier_fields() for k in range(1, len(parts) + 1))


def field_docs(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, docstring) of every leaf field, read from the attribute docstrings.

    >>> next(d for d in field_docs() if d[0] == "partition.tau")
    ('partition.tau', '0.9', 'Probability threshold: a token with p < tau is a cutpoint and inside the probability mask.')
    """
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in itertools.pairwise(body):
        docstring = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and docstring and isinstance(following.value.value, str):
            docs[node.target.id] = following.value.value
    hints = typing.get_type_hints(cls)
    defaults = cls()
    out = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_docs(hints[f.name], name + ".")
        else:
            doc = " ".join(docs.get(f.name, "").split())
            out.append((name, json.dumps(getattr(defaults, f.name)).replace('"', ""), doc))
    return out
