"""The policy engine contract: sampling requests and samples, counters, the Engine interface.

An engine samples continuations of token-id prompts (docs/design.md#token-ids: token ids in, token ids out), scores
responses by teacher forcing (docs/design.md#probabilities: logits / temperature, float32), and saves/loads Hugging Face
checkpoints. `make_engine` picks an implementation by name; vLLM is imported only when chosen. This module
imports neither torch nor numpy: the config checks its names (`ENGINES`, `DTYPES`, `PRECISIONS`) and the memory
plan reads its defaults without them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class SampleRequest:
    """Sample `n` continuations of one prompt.

    Sampling is from softmax(logits / temperature), truncated to the nucleus of mass `top_p`;
    temperature 0 means greedy decoding. Sample j draws its randomness from a generator seeded by
    (seed, j) alone (`spo.policy.sampling.sample_seed`), so it does not depend on what else is sampled.
    Generation stops after a token in `stop_token_ids` (kept in the sample) or after `max_new_tokens`;
    the tokenizer's EOS stops nothing unless it is listed.

    >>> SampleRequest(prompt_ids=[1, 5], n=2, max_new_tokens=4, temperature=0.6).prompt_ids
    (1, 5)
    """

    prompt_ids: tuple[int, ...]
    n: int
    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        # Callers hand lists or numpy rows; keep the frozen, hashable form the type promises.
        object.__setattr__(self, "prompt_ids", tuple(int(t) for t in self.prompt_ids))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        problems = [
            "prompt_ids is empty, expected at least one token" if not self.prompt_ids else "",
            f"n is {self.n}, expected >= 1" if self.n < 1 else "",
            f"max_new_tokens is {self.max_new_tokens}, expected >= 1" if self.max_new_tokens < 1 else "",
            f"temperature is {self.temperature}, expected >= 0" if not self.temperature >= 0 else "",
            f"top_p is {self.top_p}, expected 0 < top_p <= 1" if not 0 < self.top_p <= 1 else "",
            f"seed is {self.seed}, expected >= 0" if self.seed < 0 else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("SampleRequest: " + "; ".join(problems))


@dataclass(frozen=True)
class Sample:
    """One sampled continuation.

    Attributes:
        token_ids: the new tokens; ends with the stop token when it stopped on one (docs/design.md#stop-token).
        finish_reason: "stop" (a stop token was sampled) or "length" (max_new_tokens reached).
        logprobs: the engine's log-prob of each sampled token under softmax(logits / temperature),
            before top-p truncation (raw logits when temperature is 0); None if the engine has none.
    """

    token_ids: tuple[int, ...]
    finish_reason: str
    logprobs: tuple[float, ...] | None


@dataclass
class EngineStats:
    """Cumulative counters of an engine, for the stage reports (docs/design.md#mc-budget).

    `prompt_tokens` = `prefill_tokens` + `shared_prefix_tokens`.
    """

    requests: int = 0
    """Sampling requests served."""
    samples: int = 0
    """Samples returned (sum of n)."""
    prompt_tokens: int = 0
    """Prompt tokens the requests asked for, each prompt counted n times."""
    prefill_tokens: int = 0
    """Prompt tokens actually run through the model."""
    shared_prefix_tokens: int = 0
    """Prompt tokens served from a shared prefix instead of recomputed."""
    sampled_tokens: int = 0
    """New tokens returned in samples."""


class Engine(ABC):
    """A policy that samples and scores token sequences.

    Attributes:
        tokenizer: a transformers tokenizer (eos_token_id, pad_token_id, decode).
        stats: cumulative counters, updated by `sample`.
    """

    tokenizer: object
    stats: EngineStats

    @abstractmethod
    def sample(
        self, requests: Sequence[SampleRequest], progress: Callable[[int], None] | None = None
    ) -> list[list[Sample]]:
        """Sample every request; result[i] holds requests[i].n samples in order of j.

        Args:
            requests: the prompts to continue; the engine batches them itself (never pad them).
            progress: called with k after k more samples finished.
        """

    @abstractmethod
    def score(
        self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], temperature: float
    ) -> list[np.ndarray]:
        """Return each response token's log-prob by teacher forcing, logits / temperature, float32.

        Args:
            prompt_ids: B prompts (non-empty).
            response_ids: B responses; result[b] has len(response_ids[b]) entries.
            temperature: divides the logits (> 0).
        """

    @abstractmethod
    def reload(self, path: str | Path) -> None:
        """Load the weights saved at `path` (same architecture and tokenizer) into this engine, in place."""

    def close(self) -> None:
        """Release what the engine holds beyond Python memory (a vLLM engine process); default nothing."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the policy to `path` in Hugging Face format (safetensors, config, tokenizer)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, **options) -> Engine:
        """Build an engine from a Hugging Face checkpoint directory."""


DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
"""Model dtypes an engine can be asked for by name (besides "auto") -> bytes per weight."""
PRECISIONS = {"auto": None, "fp32": "float32", "bf16": "bfloat16"}
"""`train.precision` -> the dtype the train stage computes in (`train_dtype_name`; "auto" decides by device)."""

BATCH_SIZE = 256
"""`TransformersEngine`'s most sample rows decoded together (and rows scored together) unless told otherwise."""
MAX_BATCH_TOKENS = 65536
"""`TransformersEngine`'s most cached tokens per sampling batch and tokens per scoring batch unless told otherwise."""
SCORE_LOGITS_BUDGET = 2**28
"""Most float32 logits (rows x response tokens x vocab) one scoring batch materialises (1 GiB)."""
GPU_MEMORY_UTILIZATION = 0.6
"""vLLM's share of a GPU when `model.vllm_options` sets none (vLLM's own 0.9 leaves the trainer no room);
the memory plan counts it (stages/runtime/memory_plan.py)."""


def dtype_name(dtype: str, on_gpu: bool) -> str:
    """ "auto" -> "bfloat16" on a GPU, "float32" on a CPU; else a name in DTYPES.

    >>> dtype_name("auto", on_gpu=True), dtype_name("auto", on_gpu=False), dtype_name("float16", on_gpu=False)
    ('bfloat16', 'float32', 'float16')
    """
    if dtype == "auto":
        return "bfloat16" if on_gpu else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES) + ['auto']}")
    return dtype


def train_dtype_name(precision: str, model_dtype: str, on_gpu: bool) -> str:
    """The train stage's compute dtype: "bfloat16" for "bf16" (autocast over float32 master weights; the KL
    reference then runs in bfloat16 too), "float32" for "fp32", and for "auto" "bfloat16" exactly where the
    sampler's `model.dtype` resolves to it (docs/design.md#optimizer).

    >>> train_dtype_name("auto", "auto", on_gpu=False), train_dtype_name("auto", "auto", on_gpu=True)
    ('float32', 'bfloat16')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if dtype_name(model_dtype, on_gpu) == "bfloat16" else "float32"
    return PRECISIONS[precision]

ENGINES = {
    "transformers": "spo.policy.transformers_engine:TransformersEngine",
    "vllm": "spo.policy.vllm_engine:VLLMEngine",
}
"""Engine name -> "module:class"; modules are imported only when their engine is chosen."""


def make_engine(name: str, path: str | Path, **options) -> Engine:
    """Load the engine called `name` from the checkpoint at `path`.

    Args:
        name: "transformers" or "vllm".
        path: a Hugging Face checkpoint directory.
        **options: keyword options of that engine's `load`.

    >>> make_engine("jax", "ckpt")
    Traceback (most recent call last):
    ...
    ValueError: unknown engine 'jax'; choose one of ['transformers', 'vllm']
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    module_name, class_name = ENGINES[name].split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class.load(path, **options)
