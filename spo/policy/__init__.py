"""Policy engines: sample continuations of token-id prompts, score responses, save checkpoints.

`make_engine("transformers" | "vllm", path)` builds one; see `spo.policy.engine` for the contract.
"""

from spo.policy.engine import Engine, EngineStats, Sample, SampleRequest, make_engine

__all__ = ["Engine", "EngineStats", "Sample", "SampleRequest", "make_engine"]
