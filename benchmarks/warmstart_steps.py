"""How many SFT steps the warm start needs to reach its band, over seeds, float roundings and one swept setting.

    python benchmarks/warmstart_steps.py --values warmstart.lr=1.5e-3,2e-3,3e-3 --seeds 1,5 --parallel 2
    python benchmarks/warmstart_steps.py --seeds 4,5,6,7 --set 'task.options={"n_operands": 8, "digits": 2, "operators": "+"}' \\
        --set sample.max_new_tokens=128 --set sample.context_size=176 --set model.tiny.max_position_embeddings=176 \\
        --set warmstart.max_steps=16000       # the warm start of chain-length-8, alone

Each (value, rounding, seed) runs the warm stage's own `fine_tune` on the preset (`tiny` unless --preset) with
the --set overrides, in a child process with the rounding's environment (demo_seeds.py's roundings), and no
RL after it. The warm start is the first thing every demo and comparison run does and its jump into the band
comes at a step that varies widely between seeds (docs/design.md#warm-start), so this is where a setting
that every method inherits is chosen, and where a longer task is checked before its comparison spends hours.

Printed as each case ends and as a table at the end: the step kept, the updates done (a rewind past the band
abandons some), the rewinds, the held-out check it read, whether the band was reached before
`warmstart.max_steps`, the first check at half the band's lower edge, and the seconds; per value, how many cases
reached the band and the median and largest step. Benchmarks never assert.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.demo_seeds import REPO, ROUNDINGS, capability, cpu_model


def one(preset: str, sets: list[str]) -> dict:
    """Run the warm start of `preset` with `sets` in this process; its steps and checks."""
    import tempfile

    from stages.runtime.resources import load_task
    from stages.runtime.run_dir import load_preset
    from stages.warmstart import fine_tune, initial_policy

    cfg = load_preset(preset).with_overrides(sets)
    task = load_task(cfg)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        engine = initial_policy(cfg, task, Path(scratch))
        rows, counters = fine_tune(engine, task, cfg)
    checks = [(r["step"], r["accuracy"]) for r in rows if r["accuracy"] is not None]
    low = cfg.warmstart.band[0]
    return {"steps": counters["warmstart/steps"], "kept": counters["warmstart/selected_step"],
            "check": counters["warmstart/held_out_accuracy"], "rewinds": counters["warmstart/rewinds"],
            "reached": any(a >= low for _, a in checks),
            "near": next((s for s, a in checks if a >= low / 2), None), "seconds": time.perf_counter() - start}


def run_case(preset: str, sets: list[str], rounding: str, threads: int) -> dict:
    env = {**os.environ, **ROUNDINGS[rounding], "SPO_PROGRESS": "0", "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps({"preset": preset, "sets": sets})],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{rounding} {sets}: the warm start exited with {out.returncode}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,42")
    parser.add_argument("--roundings", default="native", help=f"comma-separated, of {sorted(ROUNDINGS)}")
    parser.add_argument("--values", default="", help="FIELD=V1,V2,...: one setting to sweep (none: the preset's)")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE for every case (repeatable)")
    parser.add_argument("--parallel", type=int, default=1, help="cases at a time (each with cores / N threads)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(one(spec["preset"], spec["sets"])))
        return
    roundings = args.roundings.split(",")
    unknown = [r for r in roundings if r not in ROUNDINGS]
    if unknown:
        raise SystemExit(f"--roundings: unknown {unknown}; expected some of {sorted(ROUNDINGS)}")
    field, _, values = args.values.partition("=")
    swept = [f"{field}={v}" for v in values.split(",")] if field else [""]
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    print(f"{cpu_model()}, {os.cpu_count()} cores, kernels "
          + ", ".join(f"{r}: {capability(ROUNDINGS[r])}" for r in roundings)
          + f"; preset {args.preset}, --set {args.set or 'none'}; {args.parallel} at a time, {threads} thread(s) each",
          flush=True)
    cases = [(v, r, s) for v in swept for r in roundings for s in seeds]

    def measured(case: tuple[str, str, int]) -> dict:
        value, rounding, seed = case
        sets = [*args.set, *([value] if value else []), f"seed={seed}"]
        row = {"value": value or "preset", "rounding": rounding, "seed": seed,
               **run_case(args.preset, sets, rounding, threads)}
        print(f"{row['value']} {rounding} seed {seed}: kept step {row['kept']} of {row['steps']} (check "
              f"{row['check']:.3f}, {'in' if row['reached'] else 'never reached'} the band, {row['rewinds']} rewind(s)) in "
              f"{row['seconds']:.0f} s",
              flush=True)
        return row

    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(measured, cases))
    print("\n| value | rounding | seed | kept step | updates | rewinds | check | band reached | first check at half "
          "the band's edge | s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['value']} | {r['rounding']} | {r['seed']} | {r['kept']} | {r['steps']} | {r['rewinds']} | {r['check']:.3f} | "
              f"{'yes' if r['reached'] else 'no'} | {r['near'] or '-'} | {r['seconds']:.0f} |")
    print()
    for value in dict.fromkeys(r["value"] for r in rows):
        mine = [r for r in rows if r["value"] == value]
        steps = [r["kept"] for r in mine if r["reached"]]
        print(f"{value}: band reached in {len(steps)} of {len(mine)} cases; kept step median "
              f"{statistics.median(steps) if steps else '-'}, max {max(steps) if steps else '-'}; "
              f"{statistics.fmean(r['seconds'] for r in mine):.0f} s mean")


if __name__ == "__main__":
    main()
