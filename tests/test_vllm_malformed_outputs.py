"""The vLLM adapter's conversions on the cases real vLLM does not produce on demand: malformed outputs.

Everything real vLLM can answer is tested against it in tests/test_vllm_engine.py. Here, plain objects shaped
like vLLM's `CompletionOutput` / `Logprob` stand in for outputs a working vLLM never returns (a "stop"
without the stop token, missing log-probs, an unknown finish reason), to check that the adapter refuses
them with a clear error.
"""

from types import SimpleNamespace

import pytest

from spo.policy import SampleRequest
from spo.policy.sampling import sample_seed
from spo.policy.vllm_engine import sample_from_vllm, vllm_sampling_kwargs

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
