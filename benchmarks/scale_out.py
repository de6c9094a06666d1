"""Scale-out on one machine: the resample stage on 1 process vs a 2-worker Dask cluster, and the train stage
on 1 process vs 2 torchrun ranks (DDP), side by side in one run on the demo's tiny preset.

    python benchmarks/scale_out.py                   # tiny preset, seed 1, warm start as the demo's
    python benchmarks/scale_out.py --set warmstart.enabled=false   # skip the warm start (shorter answers)

Builds one run up to iteration 0's partition (single process), then times, on copies of that run:
  resample  1 process              vs  launch.dask_workers=2 (a LocalCluster on 127.0.0.1, 1 thread each)
  train     train.world_size=1     vs  train.world_size=2 (torch.distributed.run, gloo, 1 thread per rank),
            both with two micro-batches per optimizer step
Each time is the wall time of the stage call, start-up included (a Dask cluster, torchrun's ranks), and
is printed with the stage's own report seconds. It also checks what the scale-out promises: the 2-worker
values artifact equals the single-process one row for row, and the 2-rank weights equal the single-process
ones to float32 rounding. On a 2-core machine two workers share the two cores the single process had;
the ratio says what start-up and sharding cost there, not what more machines buy. Benchmarks never assert
on time.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SPO_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # after the environment above
from safetensors.torch import load_file

from stages.runtime.artifacts import read_table
from stages.runtime.registry import find_stage
from stages.runtime.run_dir import RunDir, create_run, load_preset


def run_stage(run: RunDir, name: str, iteration: int = 0) -> tuple[float, float]:
    """Run stage `name` of `run` and return (wall seconds, the seconds its report gives)."""
    start = time.perf_counter()
    report = find_stage(name, run.config())[0](run.root, iteration)
    return time.perf_counter() - start, report.seconds


def variant(base: RunDir, folder: Path, overrides: list[str]) -> RunDir:
    """A copy of `base` with its config changed (the stage keys that read the change are stale, so the
    timed stage runs; nothing else is rerun)."""
    run = RunDir(Path(shutil.copytree(base.root, folder)))
    create_run(run.root, run.config().with_overrides(overrides))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE")
    parser.add_argument("--root", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # the single process gets the cores the two workers share
    root = args.root or Path(tempfile.mkdtemp(prefix="spo-scale-out-"))
    cfg = load_preset(args.preset).with_overrides([f"seed={args.seed}", *args.overrides])
    base = create_run(root / "base", cfg)
    for name in ("warmstart", "prompts", "generate", "partition"):
        run_stage(base, name)

    single = variant(base, root / "single", [])
    sharded = variant(base, root / "sharded", ["launch.dask_workers=2", "launch.dask_threads=1"])
    rows = [("resample", "1 process", *run_stage(single, "resample")),
            ("resample", "2 Dask workers", *run_stage(sharded, "resample"))]
    same = read_table(single.artifact(0, "values")).equals(read_table(sharded.artifact(0, "values")))

    run_stage(single, "advantages")
    half = f"train.micro_batch_size={max(1, cfg.train.batch_size // 2)}"  # 2 ranks take one each per step
    one = variant(single, root / "one-rank", [half])
    two = variant(single, root / "two-ranks", [half, "train.world_size=2", "train.sharding=ddp"])
    rows += [("train", "1 process", *run_stage(one, "train")),
             ("train", "2 torchrun ranks", *run_stage(two, "train"))]
    a, b = (load_file(r.checkpoint(1) / "model.safetensors") for r in (one, two))
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)

    print(f"\n{args.preset}, seed {args.seed}, {os.cpu_count()} CPU cores; runs under {root}")
    print(f"{'stage':<9} {'how':<17} {'wall s':>7} {'report s':>9}")
    for stage, how, wall, reported in rows:
        print(f"{stage:<9} {how:<17} {wall:>7.1f} {reported:>9.1f}")
    print(f"2-worker values equal the 1-process ones row for row: {same}")
    print(f"2-rank weights vs 1-process weights: max |difference| {gap:.1e}")
    for stage in ("resample", "train"):
        walls = [wall for s, _, wall, _ in rows if s == stage]
        print(f"{stage}: 2-way / 1-way wall time ratio {walls[1] / walls[0]:.2f}x")


if __name__ == "__main__":
    main()
