"""One process of a distributed train stage, started by torch.distributed.run (docs/architecture.md#scale-out).

    python -m torch.distributed.run --standalone --nproc-per-node W -m stages.training.ranks RUN ITERATION OUT

Every rank reads the same episodes and draws the same order, takes micro-batches rank, rank + W, ... of
each step (spo.ppo.ppo_step), and the gradients are summed over the ranks: the step is the
single-process one. "ddp" keeps a full copy of the model per rank; "fsdp" shards it with FSDP2
(`fully_shard` per decoder layer, then the whole model). Rank 0 writes the new weights, the optimizer
state (gathered whole, in the single-process format) and the metrics into OUT; the train stage moves
them into place under its own key and lock. Nothing here touches a manifest.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from schemas.train_metrics import TRAIN_METRICS
from spo.policy import make_engine
from spo.policy.logprobs import is_fsdp
from spo.sharding import SHARDINGS
from stages.runtime.artifacts import StageContext
from stages.runtime.run_dir import RunDir
from stages.training.optimize import load_optimizer_state, optimize, save_optimizer_state, saved_step
from stages.training.policy import policy_update, reference_logps


def main(run: Path, iteration: int, out: Path) -> None:
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if torch.cuda.is_available() else torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from stages.runtime.registry import find_stage  # the stage that launched this process

    root = RunDir(run)
    cfg = root.config_at(iteration)
    ctx = StageContext(root, iteration, cfg, find_stage("train", cfg)[1])
    policy = make_engine("transformers", root.checkpoint(iteration), dtype="float32", device=str(device))
    rows = ctx.read("episodes").to_pylist()
    mine = None
    if cfg.train.kl_coef > 0:
        reference = make_engine("transformers", root.checkpoint(0), dtype="float32", device=str(device))
        mine = reference_logps(reference, rows[rank::world], cfg.sample.temperature)
        del reference
    shares = [None] * world
    dist.all_gather_object(shares, mine)
    ref_logps = None if mine is None else [shares[i % world][i // world] for i in range(len(rows))]
    model = policy.model
    SHARDINGS[cfg.train.sharding](model)
    episodes, update = policy_update(ctx, rows, ref_logps, model, policy.tokenizer.pad_token_id, rank=rank,
                                     world=world)
    state = root.optimizer_state(iteration) if iteration > 0 else None
    metrics, optimizer, global_step = optimize(ctx, update, episodes, state, load_state=_load_state)
    weights, optimizer_state = _full_state(model, optimizer)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(out / "checkpoint", state_dict=weights)
        policy.tokenizer.save_pretrained(out / "checkpoint")
        save_optimizer_state(out / "optimizer", optimizer_state, global_step)
        pq.write_table(pa.Table.from_pylist(metrics, schema=TRAIN_METRICS), out / "train_metrics.parquet")
        (out / "done.json").write_text(json.dumps({"world": world, "sharding": cfg.train.sharding,
                                                   "global_step": global_step, "episodes": len(episodes)}))
    dist.barrier()
    dist.destroy_process_group()


def _names(model: torch.nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _load_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load a saved (single-process format) optimizer state into this rank's optimizer; return the step."""
    if is_fsdp(model):  # by parameter name, each rank its shard
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        by_name = _renumbered(torch.load(folder / "optimizer.pt", weights_only=True), _names(model))
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
        return saved_step(folder)
    return load_optimizer_state(folder, model, optimizer)


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The whole model and optimizer state (for FSDP2 gathered on rank 0; every rank must call this), the
    optimizer in the single-process format (parameters by index)."""
    if not is_fsdp(model):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole on rank 0 only, in CPU memory
    weights = get_model_state_dict(model, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:  # every rank but 0
        return weights, {}
    return weights, _renumbered(by_name, {name: i for i, name in enumerate(_names(model))})


def _renumbered(state: dict, key) -> dict:
    """An optimizer state dict with its parameters relabelled through `key` (index to name or back)."""
    return {"state": {key[p]: s for p, s in state["state"].items()},
            "param_groups": [{**g, "params": [key[p] for p in g["params"]]} for g in state["param_groups"]]}


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
