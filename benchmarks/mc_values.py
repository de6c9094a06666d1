"""What K buys: MC values V(b) from K continuations against a K = 64 estimate, on one iteration of a run.

    python benchmarks/mc_values.py --run data/runs/tiny --iteration 10
    python benchmarks/mc_values.py --run data/runs/tiny --iteration 10 --ks 1,2,4,8,16 --reference-k 64

Takes the iteration's rollouts and boundaries (the fixed set of boundary prefixes that iteration's
resample stage estimated), samples `--reference-k` continuations from each unique prefix with the
iteration's checkpoint for the reference value V64, then for each K an independent set of K
continuations (own seeds) for V_K. Printed per K, side by side from one run:
  bias, std, RMSE of V_K - V64 over prefixes; the binomial std sqrt(V(1-V)/K) the noise should follow;
  the share of rollouts whose last segment advantage reward - V_K is exactly 0 (no gradient at all:
  with K = 1, V_K is 0 or 1 and often equals the reward); the share whose sign of A (-, 0 or +) differs from A64's;
  sampled tokens per prefix and in all.
V64 has noise of its own (std at most 0.5 / sqrt(64) = 0.0625), which the std column includes.
"""

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("SPO_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spo.seeds import derive_seed
from stages.runtime.artifacts import read_table
from stages.runtime.resources import load_task
from stages.runtime.run_dir import RunDir
from stages.sampling.engines import load_policy
from stages.sampling.sequence import fitted_request


def boundary_prefixes(run: RunDir, iteration: int, limit: int) -> tuple[list[dict], dict[int, dict]]:
    """Up to `limit` unique boundary prefixes of the iteration (in rollout order), with their rollouts."""
    rollouts = {r["rollout_id"]: r for r in read_table(run.artifact(iteration, "rollouts")).to_pylist()}
    seen, prefixes = set(), []
    for row in read_table(run.artifact(iteration, "boundaries")).to_pylist():
        rollout = rollouts[row["rollout_id"]]
        for index, b in enumerate(row["boundaries"]):
            ids = tuple(rollout["prompt_ids"]) + tuple(rollout["response_ids"][:b])
            last = index == len(row["boundaries"]) - 1
            if ids not in seen and len(prefixes) < limit:
                seen.add(ids)
                prefixes.append({"ids": ids, "rollout_id": row["rollout_id"], "b": b, "last": last})
    return prefixes, rollouts


def values(engine, task, prefixes, rollouts, k: int, cfg, iteration: int, tag: str) -> tuple[list, int]:
    """V_K of every prefix from K fresh continuations, and the tokens sampled."""
    s, tokenizer = cfg.sample, engine.tokenizer
    requests = [fitted_request(p["ids"], k, s.max_new_tokens, s.context_size, s.temperature, s.top_p,
                               derive_seed(cfg.seed, iteration, f"mc-benchmark-{tag}", ",".join(map(str, p["ids"]))),
                               tokenizer.eos_token_id) for p in prefixes]
    before = engine.stats.sampled_tokens
    out = []
    for p, samples in zip(prefixes, engine.sample(requests)):
        rollout = rollouts[p["rollout_id"]]
        head = list(rollout["response_ids"][: p["b"]])
        example = task.example(rollout["question_id"])
        rewards = [task.reward(tokenizer.decode(head + list(x.token_ids), skip_special_tokens=True), example,
                               finished=x.finish_reason == "stop") for x in samples]
        out.append(sum(rewards) / len(rewards))
    return out, engine.stats.sampled_tokens - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory with the iteration's rollouts and boundaries")
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--reference-k", type=int, default=64)
    parser.add_argument("--prefixes", type=int, default=256, help="most boundary prefixes to estimate")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    run = RunDir(Path(args.run))
    cfg = run.config()
    task = load_task(cfg)
    prefixes, rollouts = boundary_prefixes(run, args.iteration, args.prefixes)
    if not prefixes:
        raise SystemExit(f"{run.iteration_dir(args.iteration)}: no boundaries to estimate")
    engine = load_policy(run.checkpoint(args.iteration), cfg)
    reference, ref_tokens = values(engine, task, prefixes, rollouts, args.reference_k, cfg, args.iteration,
                                   f"k{args.reference_k}")
    last = [i for i, p in enumerate(prefixes) if p["last"]]  # whose segment runs to the reward

    def last_advantages(v: list[float]) -> list[float]:
        return [rollouts[prefixes[i]["rollout_id"]]["reward"] - v[i] for i in last]

    ref_adv = last_advantages(reference)
    print(f"run {run.root}, iteration {args.iteration}: {len(prefixes)} unique boundary prefixes "
          f"({len(last)} start a last segment), reference K = {args.reference_k} "
          f"({ref_tokens} tokens), mean V{args.reference_k} = {statistics.fmean(reference):.3f}")
    print("| K | bias | std | RMSE | binomial std | A = 0 | sign of A differs | tokens / prefix | tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k in [int(x) for x in args.ks.split(",")]:
        estimate, tokens = values(engine, task, prefixes, rollouts, k, cfg, args.iteration, f"k{k}")
        errors = [e - r for e, r in zip(estimate, reference)]
        binomial = statistics.fmean(math.sqrt(max(r * (1 - r), 0.0) / k) for r in reference)
        adv = last_advantages(estimate)
        zero = sum(a == 0.0 for a in adv) / max(len(adv), 1)
        flips = sum((a > 0) != (b > 0) or (a < 0) != (b < 0) for a, b in zip(adv, ref_adv)) / max(len(adv), 1)
        print(f"| {k} | {statistics.fmean(errors):+.4f} | {statistics.pstdev(errors):.4f} "
              f"| {math.sqrt(statistics.fmean(e * e for e in errors)):.4f} | {binomial:.4f} | {zero:.3f} "
              f"| {flips:.3f} | {tokens / len(prefixes):.1f} | {tokens} |")


if __name__ == "__main__":
    main()
