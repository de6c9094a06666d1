"""VLLMEngine's own logic: requests -> vLLM arguments, vLLM outputs -> Samples, counters, reload, score.

vLLM cannot be installed here (no GPU; it is the optional `vllm` extra), so vLLM's objects are MOCKED:
`FakeLLM.generate` returns plain objects shaped like vLLM's `RequestOutput` / `CompletionOutput` /
`Logprob` (fields `outputs`, `num_cached_tokens`, `token_ids`, `finish_reason`, `stop_reason`,
`logprobs` as one {token_id: Logprob} dict per token), and `SamplingParams` / `TokensPrompt` are
stood in by dict-building functions with the same keywords. The scorer is a real TransformersEngine.
"""

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from spo.policy import SampleRequest, make_engine
from spo.policy.sampling import sample_seed
from spo.policy.tiny import build_char_tokenizer, build_tiny_model
from spo.policy.transformers_engine import TransformersEngine
from spo.policy.vllm_engine import VLLMEngine, sample_from_vllm, vllm_sampling_kwargs

STOP = 2



def completion(tokens, finish_reason, logprob=-0.5, stop_reason=None):
    """A CompletionOutput-shaped object whose sampled token j has log-prob logprob - j."""
    steps = [
        {t: SimpleNamespace(logprob=logprob - j, rank=1, decoded_token=None)} for j, t in enumerate(tokens)
    ]
    return SimpleNamespace(
        index=0,
        text="",
        token_ids=list(tokens),
        cumulative_logprob=None,
        logprobs=steps,
        finish_reason=finish_reason,
        stop_reason=stop_reason,
    )


class FakeLLM:
    """Stands in for vllm.LLM: answers each prompt with tokens derived from its seed."""

    def __init__(self, path):
        self.path, self.calls, self.rpcs, self.cache_resets = path, [], [], 0

    def collective_rpc(self, method, kwargs):
        self.rpcs.append((method, kwargs))

    def reset_prefix_cache(self):
        self.cache_resets += 1

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for prompt, params in zip(prompts, sampling_params):
            token = 4 + params["seed"] % 5
            if params["stop_token_ids"]:
                done = completion(
                    [token, params["stop_token_ids"][0]], "stop", stop_reason=params["stop_token_ids"][0]
                )
            else:
                done = completion([token] * params["max_tokens"], "length")
            cached = len(prompt["prompt_token_ids"]) - 1  # prefix-cache hits as vLLM counts them
            outputs.append(
                SimpleNamespace(
                    prompt_token_ids=prompt["prompt_token_ids"], outputs=[done], num_cached_tokens=cached
                )
            )
        return outputs


@pytest.fixture(scope="module")
def scorer():
    tokenizer = build_char_tokenizer(["abcdefgh"])
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return TransformersEngine(model, tokenizer)


@pytest.fixture
def engine(scorer, tmp_path):
    scorer.save(tmp_path / "ckpt")
    return VLLMEngine(tmp_path / "ckpt", FakeLLM, lambda path: scorer, dict, dict)


def test_request_maps_to_one_seeded_n1_vllm_prompt_per_sample():
    request = SampleRequest(
        (1, 5, 6), n=3, max_new_tokens=7, temperature=0.6, top_p=0.9, seed=11, stop_token_ids=(2,)
    )
    kwargs = [vllm_sampling_kwargs(request, j) for j in range(3)]
    assert kwargs[1] == {
        "n": 1,
        "temperature": 0.6,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": sample_seed(11, 1),
        "stop_token_ids": [2],
        "ignore_eos": True,  # only stop_token_ids stop, as in TransformersEngine
        "logprobs": 0,  # the sampled token's own log-prob
        "detokenize": False,
    }
    assert len({k["seed"] for k in kwargs}) == 3


def test_completion_to_sample():
    request = SampleRequest((1,), n=1, max_new_tokens=3, temperature=1.0, stop_token_ids=(STOP,))
    stopped = sample_from_vllm(completion([5, STOP], "stop", stop_reason=STOP), request)
    assert stopped.token_ids == (5, STOP) and stopped.finish_reason == "stop"  # the stop token is kept
    assert stopped.logprobs == (-0.5, -1.5)
    assert sample_from_vllm(completion([5, 6, 7], "length"), request).finish_reason == "length"
    nucleus = SampleRequest((1,), n=1, max_new_tokens=3, temperature=1.0, top_p=0.9)
    assert (
        sample_from_vllm(completion([5, 6, 7], "length"), nucleus).logprobs is None
    )  # renormalised: not ours


def test_completion_errors():
    request = SampleRequest((1,), n=1, max_new_tokens=3, temperature=1.0, stop_token_ids=(STOP,))
    with pytest.raises(ValueError, match="finish_reason 'abort'; expected one of \\['stop', 'length'\\]"):
        sample_from_vllm(completion([5], "abort"), request)
    with pytest.raises(
        ValueError, match="finished with 'stop' but the last token \\(6,\\) is not in stop_token_ids"
    ):
        sample_from_vllm(completion([5, 6], "stop"), request)
    missing = completion([5, 6, 7], "length")
    missing.logprobs = missing.logprobs[:2]
    with pytest.raises(ValueError, match="returned 2 log-prob entries for 3 tokens"):
        sample_from_vllm(missing, request)


def test_sample_orders_results_and_counts(engine):
    requests = [
        SampleRequest((1, 4, 5, 6), n=3, max_new_tokens=4, temperature=1.0, seed=1),
        SampleRequest((1, 7), n=2, max_new_tokens=4, temperature=1.0, seed=2, stop_token_ids=(STOP,)),
    ]
    done = []
    results = engine.sample(requests, progress=done.append)
    prompts, params = engine.llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[1, 4, 5, 6]] * 3 + [[1, 7]] * 2
    assert [p["seed"] for p in params] == [sample_seed(1, j) for j in range(3)] + [
        sample_seed(2, j) for j in range(2)
    ]
    assert [s.token_ids for s in results[0]] == [(4 + sample_seed(1, j) % 5,) * 4 for j in range(3)]
    assert [s.finish_reason for s in results[1]] == ["stop", "stop"]
    # prompt tokens 4*3 + 2*2 = 16; FakeLLM reports len - 1 cached per sample: 3*3 + 1*2 = 11 shared, 5 prefilled
    stats = engine.stats
    assert (stats.requests, stats.samples, stats.prompt_tokens) == (2, 5, 16)
    assert (stats.shared_prefix_tokens, stats.prefill_tokens, stats.sampled_tokens) == (11, 5, 3 * 4 + 2 * 2)
    assert done == [5]


def test_score_delegates_to_the_torch_scorer(engine, scorer):
    got = engine.score([[1, 4]], [[5, 6, STOP]], temperature=0.6)
    np.testing.assert_array_equal(got[0], scorer.score([[1, 4]], [[5, 6, STOP]], temperature=0.6)[0])


def test_reload_loads_weights_in_place_and_save_copies(engine, tmp_path):
    first = engine.llm
    engine.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "model.safetensors").is_file()
    engine.reload(tmp_path / "copy")
    assert engine.llm is first, "the running LLM is kept"
    assert first.rpcs == [("reload_weights", {"weights_path": str(tmp_path / "copy")})] and first.cache_resets == 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_make_engine_vllm_without_vllm_says_which_extra(tmp_path):
    with pytest.raises(ImportError, match="pip install 'spo\\[vllm\\]'"):
        make_engine("vllm", tmp_path)
