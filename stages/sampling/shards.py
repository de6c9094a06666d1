"""Sampling on a Dask cluster: a stage's requests in shards, each worker holding one engine
(docs/architecture.md#scale-out).

The stage plans its requests as always (unique prefixes, derived seeds: nothing depends on the
sharding). The requests are grouped by question (so a question's prefixes meet the same engine's
prefix cache), the groups packed into shards of about equal sample counts, and the shards mapped to
the workers of `launch.dask_scheduler` (or of a local cluster of `launch.dask_workers` processes on
127.0.0.1). A worker keeps its engine between shards and reloads weights in place for a new
checkpoint. Each finished shard is written to a part file named by the checkpoint's hash and the
shard's requests, so a stage that is killed and rerun samples only the shards it had not finished;
a shard whose worker fails is retried. The parts are merged in request order: the stage's artifact is
the one a single process samples (the engine's samples do not depend on their batch mates), and the
stage key does not read the `launch` settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spo.config import RunConfig
from spo.policy import Sample, SampleRequest

PARTS = ".parts"
"""Folder of an iteration's finished shards while a sharded stage runs."""
PART_SCHEMA = pa.schema([("request", pa.int64()), ("sample", pa.int32()), ("token_ids", pa.list_(pa.int32())),
                         ("finish_reason", pa.string()), ("logprobs", pa.list_(pa.float32())),
                         ("worker", pa.string())])


@dataclass(frozen=True)
class Sharding:
    """What a stage hands `sample_continuations` to sample on the cluster."""

    cfg: RunConfig
    checkpoint: Path
    checkpoint_hash: str
    keys: Sequence[str]
    """The question of each request: a question's requests go to one worker."""
    parts: Path
    """Folder of this stage's finished shards."""

    def sample(self, requests: Sequence[SampleRequest], progress) -> tuple[list[list[Sample]], dict[str, float]]:
        results, counters = sample_on_cluster(self.cfg, self.checkpoint, self.checkpoint_hash, requests,
                                              self.keys, self.parts, progress)
        shutil.rmtree(self.parts)  # sampled: a rerun of the stage from here on samples nothing again
        return results, counters


def sharding(ctx, keys: Sequence[str]) -> Sharding | None:
    """The Dask plan of a sampling stage (`ctx`, a StageContext) sampling its iteration's checkpoint, or None
    to sample in this process."""
    from stages.runtime import write_behind
    from stages.runtime.artifacts import read_manifest

    cfg = ctx.cfg
    if not (cfg.launch.dask_scheduler or cfg.launch.dask_workers):
        return None
    path = ctx.run.checkpoint(ctx.iteration)
    write_behind.wait(path)  # the workers load it from disk
    parts = ctx.run.iteration_dir(ctx.iteration) / PARTS / ctx.spec.name
    return Sharding(cfg, path, read_manifest(path)["sha256"], keys, parts)


def plan_shards(keys: Sequence[str], requests: Sequence[SampleRequest], shards: int) -> list[list[int]]:
    """Request indices in shards: whole groups of one key, packed greedily into `shards` of similar sample
    counts, each in request order.

    >>> reqs = [SampleRequest((1,), n=n, max_new_tokens=1, temperature=1.0) for n in (4, 4, 2, 6)]
    >>> plan_shards(["a", "a", "b", "c"], reqs, shards=2)
    [[0, 1], [2, 3]]
    """
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    bins: list[list[int]] = [[] for _ in range(max(1, min(shards, len(groups))))]
    loads = [0] * len(bins)
    for members in sorted(groups.values(), key=lambda m: -sum(requests[i].n for i in m)):
        target = loads.index(min(loads))
        bins[target] += members
        loads[target] += sum(requests[i].n for i in members)
    return [sorted(b) for b in bins if b]


def sample_on_cluster(cfg: RunConfig, checkpoint: Path, checkpoint_hash: str, requests: Sequence[SampleRequest],
                      keys: Sequence[str], parts: Path, progress: Callable[[int], None] | None) -> tuple[
                          list[list[Sample]], dict[str, float]]:
    """Sample `requests` on the cluster (module docstring); returns the samples in request order and counters."""
    from distributed import Client, LocalCluster, as_completed

    workers = cfg.launch.dask_workers or None
    cluster = None if cfg.launch.dask_scheduler else LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cfg.launch.dask_scheduler or cluster)
    try:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        plan = plan_shards(keys, requests, shards=2 * n_workers)
        parts.mkdir(parents=True, exist_ok=True)
        results: list[list[Sample | None]] = [[None] * r.n for r in requests]
        done_workers, reused, futures = set(), 0, {}
        for shard in plan:
            path = parts / f"{_shard_key(checkpoint_hash, [requests[i] for i in shard])}.parquet"
            if path.is_file():
                reused += 1
                done_workers |= _merge(pq.read_table(path), results, progress)
                continue
            future = client.submit(sample_shard, cfg, checkpoint, [(i, requests[i]) for i in shard], pure=False,
                                   retries=2)
            futures[future] = path
        for future in as_completed(futures):
            table = future.result()
            tmp = futures[future].with_name(f".{futures[future].name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp)
            tmp.replace(futures[future])
            done_workers |= _merge(table, results, progress)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    counters = {"shards/total": len(plan), "shards/reused": reused, "shards/workers": len(done_workers)}
    return results, counters


def _shard_key(checkpoint_hash: str, requests: Sequence[SampleRequest]) -> str:
    text = json.dumps([checkpoint_hash, [[r.prompt_ids, r.n, r.max_new_tokens, r.temperature, r.top_p, r.seed,
                                          r.stop_token_ids] for r in requests]])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _merge(table: pa.Table, results: list[list], progress: Callable[[int], None] | None) -> set[str]:
    workers = set()
    for row in table.to_pylist():
        logprobs = None if row["logprobs"] is None else tuple(row["logprobs"])
        results[row["request"]][row["sample"]] = Sample(tuple(row["token_ids"]), row["finish_reason"], logprobs)
        workers.add(row["worker"])
    if progress is not None:
        progress(table.num_rows)
    return workers


def sample_shard(cfg: RunConfig, checkpoint: Path, shard: list[tuple[int, SampleRequest]]) -> pa.Table:
    """On a worker: sample one shard with the worker's sampler (built once, weights reloaded in place for
    a new checkpoint: stages/sampling/engines.py); a table of its samples."""
    import torch
    from distributed import get_worker

    from stages.sampling.engines import EnginePool, build_engine

    torch.set_num_threads(cfg.launch.dask_threads)
    worker = get_worker()
    if not hasattr(worker, "spo_pool"):
        worker.spo_pool = EnginePool()
    engine, _ = worker.spo_pool.get("sampler", checkpoint, lambda: build_engine(checkpoint, cfg))
    samples = engine.sample([r for _, r in shard])
    rows = [{"request": i, "sample": j, "token_ids": list(s.token_ids), "finish_reason": s.finish_reason,
             "logprobs": None if s.logprobs is None else list(s.logprobs), "worker": worker.address}
            for (i, _), group in zip(shard, samples) for j, s in enumerate(group)]
    return pa.Table.from_pylist(rows, schema=PART_SCHEMA)
