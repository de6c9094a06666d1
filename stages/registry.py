"""The stage registry: name -> (function, spec), and the stage chain of one iteration per algorithm."""

from stages import advantages, evaluate, generate, partition, prompts, resample, train, warmstart

STAGES = {
    module.SPEC.name: (getattr(module, module.SPEC.name), module.SPEC)
    for module in (warmstart, prompts, generate, partition, resample, advantages, train, evaluate)
}
"""Stage name -> (function, spec)."""

ITERATION_STAGES = {
    "spo-chain": ("prompts", "generate", "partition", "resample", "advantages", "train"),
}
"""The stages of one policy iteration, per algorithm (chosen once from `RunConfig.algorithm`)."""
