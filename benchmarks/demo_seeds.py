"""The demo over seeds and float roundings, as a newcomer runs it: `spo demo` from an empty run folder per seed.

    python benchmarks/demo_seeds.py                           # 8 seeds x 2 roundings into data/runs/demo-seeds/
    python benchmarks/demo_seeds.py --seeds 1,2 --roundings native --root /tmp/demo-seeds
    python benchmarks/demo_seeds.py --parallel 2              # two runs at a time, one torch thread each
    python benchmarks/demo_seeds.py --seeds 42 --root /tmp/alone   # one seed alone, for its wall time

Each (rounding, seed) is a separate `spo demo --set seed=S --run ROOT/ROUNDING/tiny-sS` process (warm
start, training, plot), timed from start to exit. A rounding is an environment that changes how this CPU
rounds float32 sums and so stands in for another CPU (docs/results.md, "The demo over seeds"):

  native        torch's kernels for this CPU's instruction set (AVX-512 or AVX2)
  aten-default  ATEN_CPU_CAPABILITY=default: torch's non-vectorised kernels, as on a CPU without AVX2, so
                reductions (sums, softmax, norms) add in another order

Printed as each run ends: its warm-start and final held-out accuracy, gain and wall time; at the end one
table with a column pair per rounding, the gain's mean ± sd and min per rounding and over all runs, and the
machine (CPU, instruction set, cores, versions). With --parallel N, N runs share the cores (each with
cores / N torch threads), so wall times are longer than a run alone.

Each finished run is appended to ROOT/results.jsonl (with the machine, the commit and the runs at a time it
ran with); a later call skips the runs found there, so a sweep longer than one sitting is continued, not
redone. A run folder without a result (an interrupted run) is refused: it would be resumed from cache, not
timed. Benchmarks never assert.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"demo: warm-start accuracy ([0-9.]+) -> final accuracy ([0-9.]+) on (\d+) held-out")
ROUNDINGS = {"native": {}, "aten-default": {"ATEN_CPU_CAPABILITY": "default"}}
"""Environment overrides per rounding (the module docstring says what each changes)."""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def capability(env: dict) -> str:
    """The kernel set torch dispatches to under `env` (AVX512, AVX2 or DEFAULT)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def run_one(root: Path, preset: str, rounding: str, seed: int, threads: int) -> tuple[float, float, float]:
    run = root / rounding / f"{preset}-s{seed}"
    run.parent.mkdir(parents=True, exist_ok=True)
    log_path = run.parent / f"{preset}-s{seed}.log"
    env = {**os.environ, **ROUNDINGS[rounding], "SPO_PROGRESS": "0", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--preset", preset, "--set", f"seed={seed}",
                               "--run", str(run)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                              check=False).returncode
    seconds = time.perf_counter() - start
    found = LINE.search(log_path.read_text(errors="replace"))
    if code or not found:
        raise SystemExit(f"{rounding} seed {seed}: spo demo exited with {code}; see {log_path}")
    warm, final = float(found[1]), float(found[2])
    print(f"{rounding} seed {seed}: {warm:.3f} -> {final:.3f} ({100 * (final - warm):+.1f} points) in {seconds:.0f} s",
          flush=True)
    return warm, final, seconds


def summary(label: str, rows: list[tuple[float, float, float]]) -> str:
    gains = [100 * (final - warm) for warm, final, _ in rows]
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    return (f"{label}: gain {statistics.fmean(gains):+.1f} ± {spread:.1f} points (min {min(gains):+.1f}, "
            f"{len(gains)} runs), wall {statistics.fmean(r[2] for r in rows):.0f} s mean, "
            f"{max(r[2] for r in rows):.0f} s max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,42")
    parser.add_argument("--roundings", default=",".join(ROUNDINGS), help=f"comma-separated, of {sorted(ROUNDINGS)}")
    parser.add_argument("--root", default=str(REPO / "data" / "runs" / "demo-seeds"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (each with cores / N threads)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    roundings = args.roundings.split(",")
    unknown = [r for r in roundings if r not in ROUNDINGS]
    if unknown:
        raise SystemExit(f"--roundings: unknown {unknown}; expected some of {sorted(ROUNDINGS)}")
    root = Path(args.root)
    record = root / "results.jsonl"
    done = {(r["preset"], r["rounding"], r["seed"]): r for r in map(json.loads, record.read_text().splitlines())} \
        if record.exists() else {}
    cases = [(r, s) for r in roundings for s in seeds]
    todo = [c for c in cases if (args.preset, *c) not in done]
    for rounding, seed in todo:
        if (root / rounding / f"{args.preset}-s{seed}").exists():
            raise SystemExit(f"{root / rounding / f'{args.preset}-s{seed}'} exists without a result in {record} "
                             "(an interrupted run); remove it for a fresh timing")
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, kernels "
               + ", ".join(f"{r}: {capability(ROUNDINGS[r])}" for r in roundings)
               + "; Python " + platform.python_version() + ", "
               + ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers")))
    print(f"{machine}; {len(cases) - len(todo)} of {len(cases)} runs already in {record}; the others "
          f"{args.parallel} at a time, {threads} torch thread(s) each", flush=True)

    def measured(case: tuple[str, int]) -> None:
        warm, final, seconds = run_one(root, args.preset, *case, threads)
        row = {"preset": args.preset, "rounding": case[0], "seed": case[1], "warm": warm, "final": final,
               "seconds": round(seconds, 1), "at_a_time": args.parallel, "threads": threads, "machine": machine,
               "commit": commit()}
        with open(record, "a") as out:  # one short line per write: appends of finished runs never interleave
            out.write(json.dumps(row) + "\n")
        done[(args.preset, *case)] = row

    root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(measured, todo))
    results = {c: (done[(args.preset, *c)]["warm"], done[(args.preset, *c)]["final"], done[(args.preset, *c)]["seconds"])
               for c in cases}
    machines = {done[(args.preset, *c)]["machine"] for c in cases}
    if len(machines) > 1:
        print(f"note: these runs come from {len(machines)} machines: {sorted(machines)}")
    header = " | ".join(f"{r}: warm start -> final | gain | wall s" for r in roundings)
    print(f"\n| seed | {header} |\n| --- |" + " --- | --- | --- |" * len(roundings))
    for seed in seeds:
        cells = []
        for r in roundings:
            warm, final, seconds = results[(r, seed)]
            cells.append(f"{warm:.3f} -> {final:.3f} | {100 * (final - warm):+.1f} | {seconds:.0f}")
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    for r in roundings:
        print(summary(r, [results[(r, s)] for s in seeds]))
    if len(roundings) > 1:
        print(summary("all", list(results.values())))
    print("runs at a time: " + ", ".join(sorted({str(done[(args.preset, *c)]["at_a_time"]) for c in cases}))
          + "; " + machine)


if __name__ == "__main__":
    main()
