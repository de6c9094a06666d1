"""Checks before any work starts: what a run needs from this machine exists.

The config checks itself when it is built (spo/config.py); what it cannot know is whether the model,
the task's data and the chosen engine are here, and on a GPU whether the run fits its memory. `preflight`
looks, in well under a second, so that a missing file or a plan too big fails before Prefect, the warm
start or a download start (docs/architecture.md#preflight, docs/design.md#memory-plan).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from spo.config import ConfigError, RunConfig, is_hub_id
from stages.runtime.resources import load_task


def preflight(cfg: RunConfig) -> None:
    """Raise `ConfigError` naming the field when the model, the task data, the engine or a tracker is missing,
    or when the run's memory plan does not fit the GPU it would run on."""
    model_available(cfg.model.path)
    if cfg.model.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("model.engine = 'vllm', but vllm is not installed; install the project's vllm extra "
                          "(docs/usage.md#install) or use model.engine = 'transformers'")
    launch = cfg.launch
    if (launch.dask_scheduler or launch.dask_workers) and importlib.util.find_spec("distributed") is None:
        raise ConfigError("launch.dask_scheduler / launch.dask_workers sample on Dask, but the distributed package "
                          "is not installed; install the project's distributed extra")
    if cfg.prompt.chat_template and cfg.model.path and Path(cfg.model.path).is_dir():
        folder = Path(cfg.model.path)
        settings = folder / "tokenizer_config.json"
        templated = (folder / "chat_template.jinja").is_file() or (
            settings.is_file() and json.loads(settings.read_text()).get("chat_template"))
        if not templated:
            raise ConfigError(f"prompt.chat_template = true, but the tokenizer in model.path = {cfg.model.path!r} "
                              f"has no chat template (tokenizer_config.json or chat_template.jinja)")
    for tracker in ("tensorboard", "wandb"):
        if getattr(cfg.log, tracker) and importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"log.{tracker} = true, but {tracker} is not installed; install the project's "
                              f"trackers extra")
    task = load_task(cfg)
    for split in ("train", "test"):
        try:
            task.examples(split)
        except (OSError, ValueError, ImportError) as error:  # a missing file, a bad row, a hub id offline
            raise ConfigError(f"task {cfg.task.name!r} (task.data = {cfg.task.data!r}): {error}") from None
    gpu_memory_fits(cfg)


def gpu_memory_fits(cfg: RunConfig) -> None:
    """On a GPU, raise `ConfigError` in one line when the run's memory plan exceeds the GPU's memory
    (stages/runtime/memory_plan.py). Skipped on the CPU, and where stages run in other processes (train.world_size
    > 1, Dask sampling), which the plan does not model."""
    import torch

    from spo.policy.device import resolve_device
    from stages.runtime.memory_plan import check_memory_plan

    device = resolve_device(cfg.model.device)
    if device.type != "cuda" or cfg.train.world_size > 1 or cfg.launch.dask_scheduler or cfg.launch.dask_workers:
        return
    check_memory_plan(cfg, torch.cuda.get_device_properties(device).total_memory)


def model_available(path: str) -> None:
    """A model path is a local checkpoint folder, empty (a tiny model), or a hub id that can be loaded now."""
    if not path:
        return
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.path = {path!r} is a folder without config.json: not a Hugging Face "
                              f"checkpoint")
        return
    if not is_hub_id(path):
        raise ConfigError(f"model.path = {path!r}: no such folder, and not a Hugging Face hub id; expected a "
                          f"checkpoint folder on this machine, a hub id 'owner/name' (letters, digits, '-', '_', "
                          f"'.'), or empty for the tiny model")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
        if not isinstance(cached, str):
            raise ConfigError(f"model.path = {path!r} is not a local folder and HF_HUB_OFFLINE=1 forbids "
                              f"downloading it, and the Hugging Face cache has no copy: download it where there "
                              f"is network, or point model.path at a checkpoint folder")
