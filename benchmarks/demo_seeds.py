"""The demo over seeds, as a newcomer runs it: `spo demo` from an empty run folder per seed, one after another.

    python benchmarks/demo_seeds.py                         # seeds 1, 2, 3, 42 into data/runs/demo-seeds/
    python benchmarks/demo_seeds.py --seeds 1,2 --root /tmp/demo-seeds

Each seed is a separate `spo demo --set seed=S --run ROOT/tiny-sS` process (warm start, training, plot),
timed from start to exit. Printed: per seed the warm-start and final held-out accuracy, the gain and the
wall time, then the gain's mean ± std and min over seeds. A seed whose run folder already exists is
refused (it would be resumed from cache, not timed), unless --resume. Benchmarks never assert.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"demo: warm-start accuracy ([0-9.]+) -> final accuracy ([0-9.]+) on (\d+) held-out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,42")
    parser.add_argument("--root", default=str(REPO / "data" / "runs" / "demo-seeds"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resume", action="store_true", help="allow existing run folders (times are then not "
                                                              "those of a fresh run)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.root)
    for seed in seeds:
        if (root / f"{args.preset}-s{seed}").exists() and not args.resume:
            raise SystemExit(f"{root / f'{args.preset}-s{seed}'} exists; remove it for a fresh timing or pass --resume")
    rows = []
    for seed in seeds:
        run = root / f"{args.preset}-s{seed}"
        run.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(root / f"{args.preset}-s{seed}.log", "w") as log:
            code = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--preset", args.preset, "--set",
                                   f"seed={seed}", "--run", str(run)], cwd=REPO, stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, "SPO_PROGRESS": "0"}, check=False).returncode
        seconds = time.perf_counter() - start
        found = LINE.search((root / f"{args.preset}-s{seed}.log").read_text(errors="replace"))
        if code or not found:
            raise SystemExit(f"seed {seed}: spo demo exited with {code}; see {root / f'{args.preset}-s{seed}.log'}")
        warm, final = float(found[1]), float(found[2])
        rows.append((seed, warm, final, final - warm, seconds))
        print(f"seed {seed}: {warm:.3f} -> {final:.3f} ({100 * (final - warm):+.1f} points) in {seconds:.0f} s",
              flush=True)
    gains = [100 * r[3] for r in rows]
    times = [r[4] for r in rows]
    print("\n| seed | warm start | final | gain (points) | wall s |\n| --- | --- | --- | --- | --- |")
    for seed, warm, final, gain, seconds in rows:
        print(f"| {seed} | {warm:.3f} | {final:.3f} | {100 * gain:+.1f} | {seconds:.0f} |")
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(f"\ndemo over seeds {args.seeds}: gain {statistics.fmean(gains):+.1f} ± {spread:.1f} points "
          f"(min {min(gains):+.1f}), wall {statistics.fmean(times):.0f} s mean, {max(times):.0f} s max")


if __name__ == "__main__":
    main()
