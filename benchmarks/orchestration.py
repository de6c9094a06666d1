"""What a policy iteration costs besides its computation, at 0.5B: keys, checks, loads, saves, Parquet, Prefect.

    python benchmarks/orchestration.py                     # Qwen2.5-0.5B shape, random float32 weights
    python benchmarks/orchestration.py --model tiny        # the same on the demo's tiny model (seconds)
    python benchmarks/orchestration.py --optimizer-every 1 # write every AdamW state (the default before)

Builds a run whose checkpoint 0 is a Qwen2.5-0.5B-shaped model with random weights (about 2 GB in float32;
AdamW adds twice that), with the least sampling work that runs every stage (one question, two samples,
four new tokens, K = 1, two evaluation questions) and the real-size presets' `retention.optimizer_every = 10`,
and runs warm start, evaluation and three iterations through the Prefect flow. For each stage of the second
iteration (the first one that continues an optimizer, as every later one does) it prints the wall time the flow spent on it and, of that, the stage's own
computation (sampling, scoring, the optimizer step: its reported seconds minus model loads and saves),
then the line

    orchestration: X.X s per iteration at 0.5B (Y.Y GB checkpoint), Z checkpoint hashes

where X is the second iteration's wall time minus its own computation and Z counts the times a file of a
checkpoint or optimizer state up to the second iteration's (checkpoint 2) was hashed from the start of the
second iteration on, leaving out checkpoint 1's own hash when written behind the flow (the first
iteration's, landing during the second). Saves and hashes made by the background writer (stages/runtime/write_behind.py) overlap the
stages that run meanwhile: they are printed apart, and only the time a stage waits for them counts as its
overhead. Model loads, saves, hashes and waits are timed by wrapping the library calls that do them (this
script only observes; nothing in the pipeline knows about it). Benchmarks never assert on time.
"""

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("SPO_PROGRESS", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

TIMES: dict[str, float] = defaultdict(float)
BEHIND = "spo-write-behind"
"""Thread-name prefix of the background writer: its seconds go to TIMES["behind <label>"]."""


def timed(owner, name: str, label: str, counted=None):
    """Wrap owner.name so that its seconds add to TIMES[label] (TIMES["behind " + label] on the background
    writer's thread); `counted(args)` sees every call."""
    real = getattr(owner, name)
    descriptor = owner.__dict__.get(name)
    is_class = isinstance(descriptor, classmethod)
    function = descriptor.__func__ if is_class else real

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            behind = threading.current_thread().name.startswith(BEHIND)
            TIMES[f"behind {label}" if behind else label] += time.perf_counter() - start
            if counted is not None:
                counted(args)

    setattr(owner, name, classmethod(wrapper) if is_class else wrapper)


HASHED: list[tuple[int, str, bool]] = []
"""(checkpoint index, file, on the background writer) of every hash of a checkpoint's or optimizer state's
file, in order."""


def in_checkpoint(args) -> bool:
    """Record a hash of a checkpoint's file (or, for older code, of a whole checkpoint folder)."""
    for arg in args:
        if not isinstance(arg, (str, Path)):
            continue
        parts = Path(str(arg)).parts
        if "checkpoints" in parts:
            folder = parts[parts.index("checkpoints") + 1]
            HASHED.append((int(folder[:4]), str(Path(*parts[parts.index("checkpoints") + 2:])),
                           threading.current_thread().name.startswith(BEHIND)))
            return True
    return False


def checkpoint_hashes(calls: list[tuple[int, str, bool]], first_new: int) -> int:
    """Passes over a checkpoint: per index, the most times any one of its files was hashed, summed; the
    background writer's hashes of checkpoints before `first_new` (written by an earlier iteration) left out."""
    per_file: dict[tuple[int, str], int] = defaultdict(int)
    for index, file, behind in calls:
        if not (behind and index < first_new):
            per_file[index, file] += 1
    passes: dict[int, int] = defaultdict(int)
    for (index, _), count in per_file.items():
        passes[index] = max(passes[index], count)
    return sum(passes.values())


def instrument() -> None:
    """Time model loads and saves and count checkpoint hashes, for this code and for older versions."""
    import stages.runtime.artifacts
    from spo.policy.transformers_engine import TransformersEngine

    try:
        import stages.runtime.write_behind
    except ImportError:  # older code: every write in the foreground
        pass

    timed(TransformersEngine, "load", "load")
    timed(TransformersEngine, "save", "save")
    if hasattr(TransformersEngine, "reload"):
        timed(TransformersEngine, "reload", "load")
    if hasattr(stages, "write_behind"):
        timed(stages.runtime.write_behind.WriteBehind, "wait", "wait")
    if hasattr(stages.runtime.artifacts, "check_records"):  # hashes recorded per file (stages/runtime/checksums.py)
        import stages.runtime.checksums

        timed(stages.runtime.checksums, "file_sha256", "hash", counted=in_checkpoint)
    else:  # older code: one content hash of a whole artifact at every read
        timed(stages.runtime.artifacts, "content_hash", "hash", counted=in_checkpoint)
    import torch

    timed(torch, "save", "save")
    timed(torch, "load", "load")


def build_model(kind: str, folder: Path) -> float:
    """Write the starting model to `folder`; return its size in GB."""
    import torch
    from engine import QWEN25_05B, synthetic_corpus
    from transformers import AutoModelForCausalLM, Qwen2Config

    from spo.policy.tiny import build_bpe_tokenizer, build_tiny_model

    tokenizer = build_bpe_tokenizer(synthetic_corpus(2000, 0), vocab_size=512)
    if kind == "tiny":
        model = build_tiny_model(tokenizer, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                                 max_position_embeddings=256)
    else:
        torch.manual_seed(0)
        config = Qwen2Config(**{**QWEN25_05B, "max_position_embeddings": 512}, torch_dtype="float32",
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["qwen2.5-0.5b-config", "tiny"], default="qwen2.5-0.5b-config")
    parser.add_argument("--root", default="/tmp/spo-orchestration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--optimizer-every", type=int, default=10, help="retention.optimizer_every (the "
                        "real-size presets' 10)")
    args = parser.parse_args()
    import shutil

    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    gigabytes = build_model(args.model, root / "model")
    instrument()
    from flows.processes import prefect_api
    from flows.spo_run import spo_run
    from stages.runtime.run_dir import create_run, load_preset

    cfg = load_preset("tiny").with_overrides([
        "name=orchestration", f"model.path={root / 'model'}", "warmstart.enabled=false", "iterations=3",
        "eval.every=1", "eval.questions=2", "eval.samples_per_question=0", "sample.questions_per_iteration=1",
        "sample.samples_per_question=2", "sample.max_new_tokens=4", "sample.context_size=64", "resample.k=1",
        "partition.interval=1", "train.episodes_per_iteration=2", "train.batch_size=2", "train.micro_batch_size=2",
        'task.options={"n_operands": 3, "digits": 2, "operators": "+"}', f"retention.optimizer_every={args.optimizer_every}",
    ])
    run = create_run(root / "run", cfg)
    with prefect_api(run.root) if "folder" in prefect_api.__code__.co_varnames else prefect_api():
        walls = run_flow(spo_run, run)
    report(run, walls, gigabytes, args.model)


def run_flow(spo_run, run) -> dict[str, float]:
    """Run the flow with every stage timed from the flow's side: (stage-iteration) -> wall seconds."""
    import flows.spo_run

    walls: dict[str, float] = {}
    real = flows.spo_run.run_stage
    snapshots: dict[str, tuple] = {}

    def run_stage(name, run_dir, iteration):
        before = (dict(TIMES), len(HASHED))
        start = time.perf_counter()
        result = real(name, run_dir, iteration)
        walls[f"{name}-{iteration}"] = time.perf_counter() - start
        snapshots[f"{name}-{iteration}"] = (before, (dict(TIMES), len(HASHED)))
        return result

    flows.spo_run.run_stage = run_stage
    spo_run(str(run.root))
    walls["_snapshots"] = snapshots
    return walls


def report(run, walls: dict, gigabytes: float, model: str) -> None:
    snapshots = walls.pop("_snapshots")
    reports = {}
    for manifest in run.root.rglob("*.manifest.json"):
        data = json.loads(manifest.read_text())
        if "report" in data:
            r = data["report"]
            reports[f"{r['stage']}-{r['iteration']}"] = r
    print("| stage (iteration 1) | wall s | own computation s | loads s | saves s | hashes s | waits s "
          "| overhead s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = [k for k in walls if (k.endswith("-1") and k != "evaluate-1") or k == "evaluate-2"]
    total_overhead, first_hash = 0.0, snapshots[keys[0]][0][1]
    for key in keys:
        (t0, _), (t1, _) = snapshots[key]
        load, save, hashing, waiting = (t1.get(label, 0) - t0.get(label, 0)
                                        for label in ("load", "save", "hash", "wait"))
        own = max(reports[key]["seconds"] - load - save - waiting, 0.0) if key in reports else 0.0
        overhead = walls[key] - own
        total_overhead += overhead
        print(f"| {key} | {walls[key]:.2f} | {own:.2f} | {load:.2f} | {save:.2f} | {hashing:.2f} | {waiting:.2f} "
              f"| {overhead:.2f} |")
    if TIMES.get("behind save"):
        print(f"\nwritten behind the flow over the whole run (checkpoints 1-3 and their optimizer states written): "
              f"{TIMES['behind save']:.1f} s of saves and {TIMES.get('behind hash', 0):.1f} s of hashes, overlapping "
              f"the stages that ran meanwhile")
    size = "0.5B" if model != "tiny" else "tiny"
    print(f"\norchestration: {total_overhead:.1f} s per iteration at {size} ({gigabytes:.1f} GB checkpoint), "
          f"{checkpoint_hashes([c for c in HASHED[first_hash:] if c[0] <= 2], first_new=2)} checkpoint hashes")


if __name__ == "__main__":
    main()
