"""Every GPU preset's dress rehearsal, one after another, as one table: seconds per stage and peak memory.

    python benchmarks/rehearsals.py                               # every GPU preset, 2 layers, the CI shape
    python benchmarks/rehearsals.py --presets gsm8k-qwen05b-instruct-chain --layers full
    python benchmarks/rehearsals.py --engine transformers --root /tmp/rehearsals

Each preset is one `spo rehearse PRESET --run ROOT/PRESET` process (docs/usage.md: what a rehearsal proves
and what it cannot), with the preset's engine unless --engine names one. MATH-500 has no train split, so the
MATH preset rehearses on its test rows, linked as train.jsonl into ROOT/math500-rows (never into the
repository). A run folder that exists is refused by `spo rehearse`'s own checks, so use a fresh --root. Each
run's checkpoints (weights and AdamW state: 2-3 GB a preset at 2 layers) are removed once its table is read,
unless --keep-checkpoints.

Printed as each rehearsal ends: its stage table; at the end one table with a row per preset (seconds of each
stage, all stages, the flow's wall time, and the peak RSS of the flow's processes) and the machine.
Benchmarks never assert.
"""

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.demo_seeds import cpu_model
from stages.runtime.rehearsal import gpu_presets, math500_rows
from stages.runtime.run_dir import load_preset

ROW = re.compile(r"^(\S+(?: \S+)?)\s+(\d+|)\s+([0-9.]+)\s+([0-9,]+)\s")
WALL = re.compile(r"^flow \(wall\)\s+([0-9.]+)")


def rehearse(preset: str, root: Path, layers: str, engine: str | None, keep: bool) -> dict:
    """One rehearsal in a child process: {stage (with iteration): seconds}, the peak RSS in MB, wall seconds."""
    command = [sys.executable, "-m", "flows.cli", "rehearse", preset, "--run", str(root / preset), "--layers", layers]
    if engine:
        command += ["--engine", engine]
    if load_preset(preset).task.name == "math500":
        command += ["--set", f"task.data={math500_rows(root / 'math500-rows')}"]
    env = {**os.environ, "SPO_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if not keep:
        shutil.rmtree(root / preset / "checkpoints", ignore_errors=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}
    out = done.stdout
    table = out[out.index("stage costs"):].splitlines()
    print(f"\n{preset}:\n" + "\n".join(table[: next(i for i, line in enumerate(table) if line.startswith("flow"))
                                           + 1]), flush=True)
    stages, peak, wall = {}, 0, None
    for line in table[2:]:
        if (found := WALL.match(line)):
            wall = float(found.group(1))
            break
        if (found := ROW.match(line)):
            name = found.group(1) if not found.group(2) else f"{found.group(1)} {found.group(2)}"
            stages[name] = float(found.group(3))
            peak = max(peak, int(found.group(4).replace(",", "")))
    return {"stages": stages, "peak_mb": peak, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(gpu_presets()))
    parser.add_argument("--layers", default="2", help="decoder layers, or 'full'")
    parser.add_argument("--engine", default=None, help="transformers or vllm (default: each preset's)")
    parser.add_argument("--root", default=None, help="where the runs go (default: a new temporary folder)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's weights and AdamW state")
    args = parser.parse_args()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="rehearsals-"))
    results = {preset: rehearse(preset, root, args.layers, args.engine, args.keep_checkpoints)
               for preset in args.presets.split(",")}

    columns = []
    for result in results.values():
        columns += [name for name in result.get("stages", {}) if name not in columns and name != "all stages"]
    print(f"\n| preset | {' | '.join(columns)} | all stages s | flow wall s | peak RSS GB |")
    print("| --- " * (len(columns) + 4) + "|")
    for preset, result in results.items():
        if "error" in result:
            print(f"| {preset} | failed: {result['error']} |")
            continue
        cells = [f"{result['stages'][c]:.1f}" if c in result["stages"] else "" for c in columns]
        print(f"| {preset} | {' | '.join(cells)} | {result['stages'].get('all stages', 0):.1f} | "
              f"{result['wall']:.1f} | {result['peak_mb'] / 1024:.1f} |")
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"\n{args.layers} layers; {cpu_model()}, {os.cpu_count()} cores, torch threads {threads}; "
          f"Python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}; "
          f"runs in {root}")


if __name__ == "__main__":
    main()
