"""Stages: plain functions from input artifacts to output artifacts, `stage(run, iteration, force=False)`.

The modules here are the stages, one per module and named after it: warmstart, prompts, generate,
partition, resample, critic_values, advantages, credit, train, critic_train, evaluate, critic_init, tree
(the levels `tree-<d>`) and tree_advantages. No stage imports another. The order in which each algorithm
runs them is one table, `stages/runtime/registry.py`. What they share lives in subpackages:

    runtime/   running stages and keeping a run: execute, keys and manifests, the run folder, locks, writes
               behind the flow, code fingerprints and history, the registry, retention, sharing, checks
    sampling/  engines, the one sampling sequence, Dask shards, child processes
    training/  the optimizer loop, the policy's PPO update, the ranks of a distributed train stage
    reports/   summaries and plots, `spo inspect`, trackers, `spo compare`'s report

See docs/architecture.md#layers.
"""
