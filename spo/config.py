"""Typed run configuration: one frozen dataclass per concern, composed into `RunConfig`.

Defaults are the reference's SPO-chain GSM8K values (`spo-reference.md` §4.5) unless a field says
otherwise; presets (`data/presets/*.toml`) are plain overrides of these fields. Core functions never
take a config: stages read the fields they need and pass plain values.

>>> cfg = RunConfig().with_overrides(["sample.temperature=0.7", "iterations=3"])
>>> cfg.sample.temperature, cfg.iterations
(0.7, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TinyModelConfig:
    """A small Llama built locally when `ModelConfig.path` is empty (tests and the CPU demo)."""

    tokenizer: str = "char"
    """"char" (one token per character of the task's text) or "bpe" (trained on the task's text)."""
    bpe_vocab_size: int = 512
    """Vocabulary size of the BPE tokenizer; ignored for "char"."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block."""
    intermediate_size: int = 512
    """Width of the MLP."""
    max_position_embeddings: int = 256
    """Longest sequence (prompt + response) the model accepts."""


@dataclass(frozen=True)
class ModelConfig:
    """Which policy to start from and which engine samples it."""

    path: str = "realtreetune/rho-1b-sft-GSM8K"
    """Local folder or hub id of a Hugging Face causal LM (reference: RhoMath-1.1B SFT); empty builds `tiny`."""
    engine: str = "transformers"
    """Sampling engine: "transformers" (tested everywhere) or "vllm" (optional extra, GPU)."""
    dtype: str = "auto"
    """"auto" (bf16 on GPU, float32 on CPU), "float32" or "bfloat16"."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the locally built model when `path` is empty."""


@dataclass(frozen=True)
class TaskConfig:
    """The task the policy is trained and evaluated on."""

    name: str = "gsm8k"
    """A registered task: "arith", "gsm8k", "math500" or one a user registered."""
    data_dir: str = ""
    """Where the task's files are; empty means the checkout's sibling `../shared/data/<task>`."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the task factory (e.g. arith's `n_operands`, `digits`)."""


@dataclass(frozen=True)
class SampleConfig:
    """Rollout sampling, per iteration (reference §2.1)."""

    questions_per_iteration: int = 64
    """Training questions drawn (with replacement across iterations) per iteration."""
    samples_per_question: int = 8
    """Rollouts N per question."""
    temperature: float = 0.6
    """Sampling temperature; also the temperature of every recomputed log-prob (rule 3)."""
    top_p: float = 0.9
    """Nucleus sampling mass (1.0 disables it)."""
    max_new_tokens: int = 1024
    """Longest response; a response cut here scores the unfinished penalty."""
    context_size: int = 2047
    """Prompt + response limit; `max_new_tokens` is lowered to fit it."""


@dataclass(frozen=True)
class PartitionConfig:
    """Where responses are cut into segments (spo/segments.py)."""

    method: str = "cutpoint"
    """"cutpoint" (SPO-chain), "fixed_count", "fixed_length", "newline", or "none" (GRPO/RLOO)."""
    tau: float = 0.9
    """Probability threshold: a token with p < tau is a cutpoint and inside the probability mask."""
    interval: int = 5
    """Cutpoints per segment ("int" in the paper)."""
    n_segments: int = 4
    """Chunks of the "fixed_count" baseline."""
    segment_tokens: int = 30
    """Tokens per segment of "fixed_length"."""
    max_boundaries: int = 0
    """Most MC boundaries per rollout; 0 means unlimited, as the reference (rule 9)."""


@dataclass(frozen=True)
class ResampleConfig:
    """Monte-Carlo value estimation at boundaries (reference §2.4)."""

    k: int = 9
    """Continuations K sampled from each unique boundary prefix."""


@dataclass(frozen=True)
class AdvantageConfig:
    """How rewards and values become per-token advantages."""

    method: str = "segment"
    """"segment" (value difference across each segment), "grpo" or "rloo" (one advantage per rollout)."""
    prob_mask: bool = True
    """Give advantage and loss only to tokens with p < tau (the probability mask)."""
    train_on_eos: bool = True
    """Train on a final EOS token (rule 7); false reproduces the reference, which never does."""


@dataclass(frozen=True)
class TreeConfig:
    """SPO-tree sampling (reference §3), used when `algorithm = "spo-tree"`."""

    branching: tuple[int, ...] = (6, 6, 6)
    """Children per expanded node at each depth; its length is the tree depth."""
    segment_tokens: int = 30
    """M: tokens per segment of every level but the last, which runs to the end."""
    advantage: str = "rloo"
    """Edge advantage: "rloo" (V(child) - V(parent)) or "grpo" (divided by the parent's std + 1e-8)."""
    replay_max_age: int = 8
    """Edges older than this many iterations leave the replay buffer."""
    replay_per_question: int = 32
    """Most edges taken per question per iteration from the replay buffer."""


@dataclass(frozen=True)
class TrainConfig:
    """The PPO-clip update (reference §4)."""

    lr: float = 1e-6
    """Peak AdamW learning rate."""
    warmup_ratio: float = 0.03
    """Fraction of all optimizer steps spent warming up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    epochs: int = 2
    """Passes over the iteration's episodes."""
    episodes_per_iteration: int = 512
    """Episodes trained per iteration: more are dropped, fewer are repeated (reference §1.4); 0 uses all."""
    batch_size: int = 64
    """Episodes per optimizer step."""
    micro_batch_size: int = 8
    """Episodes per forward/backward pass (gradient accumulation fills the batch)."""
    clip: float = 0.2
    """PPO ratio clip epsilon."""
    kl_coef: float = 1e-4
    """Weight of the k3 KL to the initial policy, in the loss."""
    whiten: str = "micro_batch"
    """Advantage standardisation scope: "micro_batch" (reference), "batch" or "none"."""


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation of a checkpoint (reference §6.2)."""

    every: int = 10
    """Evaluate after every this many iterations (and after the last)."""
    questions: int = 256
    """Test questions evaluated (the first ones of the test split); 0 means all."""
    samples_per_question: int = 4
    """Sampled answers per question for the mean-over-samples accuracy; 0 skips sampling."""
    temperature: float = 0.35
    """Sampling temperature of the mean-over-samples accuracy."""
    greedy: bool = True
    """Also decode greedily (one answer per question)."""


@dataclass(frozen=True)
class WarmstartConfig:
    """Supervised fine-tuning on the task's reference solutions before RL (for a tiny model)."""

    enabled: bool = False
    """Run SFT; when false checkpoint 0 is the initial model as it is."""
    max_steps: int = 2000
    """Most SFT steps."""
    batch_size: int = 64
    """Examples per SFT step."""
    lr: float = 3e-3
    """Peak learning rate (linear warm-up over 50 steps, then constant)."""
    eval_every: int = 25
    """Steps between held-out greedy accuracy checks."""
    eval_questions: int = 256
    """Held-out training questions (never trained on) used for the band check."""
    band: tuple[float, float] = (0.2, 0.4)
    """Stop once held-out greedy accuracy is inside [low, high]; past it, keep the last checkpoint below."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; stored resolved in `run.json`."""

    name: str = "run"
    """Run name; the run directory defaults to `data/runs/<name>`."""
    seed: int = 42
    """Run seed; every sampling request derives its own seed from it (rule 4)."""
    algorithm: str = "spo-chain"
    """"spo-chain" (also GRPO/RLOO/baselines, by partition and advantage) or "spo-tree"."""
    iterations: int = 1000
    """Policy iterations; also the horizon of the learning-rate decay."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {sorted(ALGORITHMS)}")
        if self.train.batch_size % self.train.micro_batch_size:
            raise ValueError(
                f"train.batch_size {self.train.batch_size} is not a multiple of train.micro_batch_size "
                f"{self.train.micro_batch_size}: gradient accumulation needs whole micro-batches"
            )
        low, high = self.warmstart.band
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"warmstart.band {self.warmstart.band} must satisfy 0 <= low <= high <= 1")
        if self.partition.tau <= 0.0 or self.partition.tau > 1.0:
            raise ValueError(f"partition.tau {self.partition.tau} must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        """Build from a (possibly partial) dict; unknown keys are errors naming `where`."""
        return _build(cls, data, where)

    def with_overrides(self, assignments: list[str], where: str = "--set") -> RunConfig:
        """Apply `section.field=value` strings; values are parsed by the field's type."""
        data = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep:
                raise ValueError(f"{where}: {assignment!r} is not key=value")
            *path, leaf = key.strip().split(".")
            node, owner = data, RunConfig
            for part in path:
                if part not in node or not isinstance(node[part], dict):
                    raise ValueError(f"{where}: {key!r}: no section {part!r}")
                owner = _field_type(owner, part, where)
                node = node[part]
            if leaf not in node:
                raise ValueError(f"{where}: {key!r}: no field {leaf!r}")
            node[leaf] = _parse_value(raw.strip(), _field_type(owner, leaf, where), f"{where} {key}")
        return RunConfig.from_dict(data, where)

    def section_hash(self, *names: str) -> str:
        """Short content hash of the named fields or sections, dotted for nested ones (stage cache keys).

        >>> RunConfig().section_hash("sample.top_p") == RunConfig(seed=1).section_hash("sample.top_p")
        True
        """
        data = self.to_dict()
        chosen = {}
        for name in names:
            value = data
            for part in name.split("."):
                value = value[part]
            chosen[name] = value
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


ALGORITHMS = ("spo-chain", "spo-tree")


@dataclass(frozen=True)
class ArmConfig:
    """One arm of a comparison: a preset plus overrides (docs/design.md#comparisons)."""

    label: str
    """Short name, unique in the comparison; the arm's runs are `<comparison>/<label>-s<seed>`."""
    preset: str
    """A preset of data/presets/ (without .toml)."""
    set: tuple[str, ...] = ()
    """`section.field=value` overrides, applied after the comparison's own `set`."""


@dataclass(frozen=True)
class ComparisonConfig:
    """Arms run on the same seeds and compared seed by seed (`spo compare`)."""

    name: str
    """Comparison name; its runs live under `data/runs/<name>/`."""
    description: str = ""
    """What the comparison asks, for the table's title."""
    seeds: tuple[int, ...] = (1, 2, 3)
    """Run seeds; every arm runs every seed, and arms of one seed share their warm start."""
    set: tuple[str, ...] = ()
    """Overrides applied to every arm (e.g. the iteration count), before the arm's own."""
    arms: tuple[ArmConfig, ...] = ()
    """The arms; the first is the reference the others are compared with."""

    def __post_init__(self) -> None:
        labels = [a.label for a in self.arms]
        if not labels:
            raise ValueError(f"comparison {self.name!r}: arms is empty, expected at least one [[arms]] table")
        if len(set(labels)) != len(labels):
            raise ValueError(f"comparison {self.name!r}: arm labels must be unique, got {labels}")
        bad = [label for label in labels if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", label)]
        if bad:
            raise ValueError(f"comparison {self.name!r}: arm labels {bad} must be letters, digits and _.+- "
                             f"(they name folders)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"comparison {self.name!r}: seeds {list(self.seeds)} must be distinct ints >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "comparison") -> ComparisonConfig:
        """Build from a parsed TOML table; unknown keys are errors naming `where`."""
        return _build(cls, data, where)


def _field_type(owner: type, name: str, where: str) -> Any:
    hints = typing.get_type_hints(owner)
    if name not in hints:
        raise ValueError(f"{where}: {owner.__name__} has no field {name!r}")
    return hints[name]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} in {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
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


def _parse_value(raw: str, kind: Any, where: str) -> Any:
    """Parse a command-line value by the field's type (JSON for lists and tables)."""
    if kind is str:
        return raw
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"{where}: expected true or false, got {raw!r}")
        return raw.lower() == "true"
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{where}: cannot parse {raw!r} as {getattr(kind, '__name__', kind)}: {error}")


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
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = following.value.value
    hints = typing.get_type_hints(cls)
    defaults = cls()
    out = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_docs(hints[f.name], name + ".")
        else:
            out.append((name, json.dumps(getattr(defaults, f.name)).replace('"', ""), docs.get(f.name, "")))
    return out
