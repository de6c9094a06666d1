"""TransformersEngine, its prefix-sharing decoder, sampling and response_logprobs, on real tiny models."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from spo.policy import EngineStats, SampleRequest, make_engine
from spo.policy.logprobs import response_logprobs
from spo.policy.prefix_cache import SuffixCache, decode_step, prefill
from spo.policy.sampling import choose_tokens
from spo.policy.tiny import build_char_tokenizer, build_tiny_model
from spo.policy.transformers_engine import TransformersEngine

TEXT = "Q: 23+45+17= A: 23+45=68; 68+17=85. #### 85\n"



@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer([TEXT])


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(
        tokenizer, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, seed=3
    )


def engine(model, tokenizer, **options) -> TransformersEngine:
    return TransformersEngine(model, tokenizer, **options)


def prompt(tokenizer, text: str) -> tuple[int, ...]:
    return (tokenizer.bos_token_id, *tokenizer.encode(text))


def tokens_of(results):
    return [[s.token_ids for s in samples] for samples in results]


def assert_same_samples(a, b):
    assert tokens_of(a) == tokens_of(b)
    assert [[s.finish_reason for s in r] for r in a] == [[s.finish_reason for s in r] for r in b]
    for ra, rb in zip(a, b):
        for sa, sb in zip(ra, rb):
            np.testing.assert_allclose(sa.logprobs, sb.logprobs, atol=1e-5)


def forward_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()  # (L, V)


# ---------------------------------------------------------------- batching independence


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mates=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 3), st.integers(0, 99)), max_size=3),
    position=st.integers(0, 4),
    batch_size=st.sampled_from([2, 5, 256]),
    share_prefix=st.booleans(),
)
def test_a_request_samples_the_same_whatever_its_batch(
    model, tokenizer, mates, position, batch_size, share_prefix
):
    target = SampleRequest(prompt(tokenizer, "Q: 23+45"), n=3, max_new_tokens=12, temperature=1.0, seed=7)
    alone = engine(model, tokenizer).sample([target])[0]
    others = [
        SampleRequest(
            prompt(tokenizer, TEXT[:length]), n=n, max_new_tokens=8 + seed % 9, temperature=0.8, seed=seed
        )
        for length, n, seed in mates
    ]
    requests = others[:position] + [target] + others[position:]
    batched = engine(model, tokenizer, batch_size=batch_size, share_prefix=share_prefix).sample(requests)
    assert_same_samples([alone], [batched[min(position, len(others))]])


def test_prefix_shared_sampling_equals_naive_sampling(model, tokenizer):
    stop = tuple(tokenizer.encode("#=;"))
    requests = [
        SampleRequest(
            prompt(tokenizer, text),
            n=n,
            max_new_tokens=m,
            temperature=t,
            top_p=p,
            seed=s,
            stop_token_ids=stop,
        )
        for text, n, m, t, p, s in [
            (TEXT, 6, 20, 1.0, 1.0, 0),
            ("Q: 2", 4, 9, 0.6, 0.9, 1),
            (TEXT[:30], 5, 14, 1.3, 1.0, 2),
        ]
    ]
    shared = engine(model, tokenizer).sample(requests)
    naive = engine(model, tokenizer, share_prefix=False).sample(requests)
    split = engine(model, tokenizer, batch_size=2).sample(requests)  # n > batch_size: groups of 2
    assert_same_samples(shared, naive)
    assert_same_samples(shared, split)
    assert {s.finish_reason for r in shared for s in r} == {
        "stop",
        "length",
    }  # early finishers were compacted


def test_samples_of_one_request_differ_and_seeds_matter(model, tokenizer):
    request = SampleRequest(prompt(tokenizer, "Q: "), n=4, max_new_tokens=16, temperature=1.0, seed=0)
    first = tokens_of(
        engine(model, tokenizer).sample([request, SampleRequest(**{**request.__dict__, "seed": 1})])
    )
    assert len(set(first[0])) == 4
    assert first[0] != first[1]


# ---------------------------------------------------------------- what is sampled


def test_score_agrees_with_sampling_logprobs(model, tokenizer):
    requests = [
        SampleRequest(prompt(tokenizer, TEXT[:12]), n=3, max_new_tokens=15, temperature=0.7, seed=4),
        SampleRequest(prompt(tokenizer, "A:"), n=2, max_new_tokens=15, temperature=0.7, top_p=0.8, seed=5),
    ]
    eng = engine(model, tokenizer)
    results = eng.sample(requests)
    prompts = [r.prompt_ids for r, samples in zip(requests, results) for _ in samples]
    samples = [s for row in results for s in row]
    scores = eng.score(prompts, [s.token_ids for s in samples], temperature=0.7)
    for sample, score in zip(samples, scores):
        assert score.dtype == np.float32 and score.shape == (len(sample.token_ids),)
        np.testing.assert_allclose(score, sample.logprobs, atol=1e-4)  # top-p does not change the log-prob
    small_batches = engine(model, tokenizer, batch_size=2, max_batch_tokens=40).score(
        prompts, [s.token_ids for s in samples], 0.7
    )
    for a, b in zip(small_batches, scores):
        np.testing.assert_allclose(a, b, atol=1e-5)
    empty = eng.score([prompts[0], prompts[0]], [[], samples[0].token_ids[:2]], temperature=0.7)
    assert empty[0].shape == (0,) and np.allclose(empty[1], samples[0].logprobs[:2], atol=1e-4)
    assert [len(s) for s in eng.score([prompts[0]], [[]], temperature=0.7)] == [
        0
    ]  # a batch of empty responses


def test_finish_reasons_and_stop_token_kept(model, tokenizer):
    stop = tuple(range(4, len(tokenizer), 2))  # every other character
    request = SampleRequest(
        prompt(tokenizer, "Q"), n=16, max_new_tokens=6, temperature=1.0, seed=9, stop_token_ids=stop
    )
    samples = engine(model, tokenizer).sample([request])[0]
    for s in samples:
        inside = [t in stop for t in s.token_ids]
        if s.finish_reason == "stop":
            assert inside[-1] and not any(inside[:-1])  # stopped at the first stop token, which is kept
        else:
            assert s.finish_reason == "length" and len(s.token_ids) == 6 and not any(inside)
    assert {s.finish_reason for s in samples} == {"stop", "length"}
    everything = SampleRequest(
        request.prompt_ids, n=2, max_new_tokens=6, temperature=1.0, stop_token_ids=range(len(tokenizer))
    )
    assert [
        (len(s.token_ids), s.finish_reason) for s in engine(model, tokenizer).sample([everything])[0]
    ] == [(1, "stop")] * 2


def test_top_p_samples_only_from_the_nucleus(model, tokenizer):
    def mass_before(top_p):
        request = SampleRequest(
            prompt(tokenizer, "Q: 2"), n=24, max_new_tokens=8, temperature=1.0, top_p=top_p, seed=2
        )
        masses = []
        for s in engine(model, tokenizer).sample([request])[0]:
            probs = torch.softmax(forward_logits(model, [*request.prompt_ids, *s.token_ids]), -1)
            for i, token in enumerate(s.token_ids):
                p = probs[len(request.prompt_ids) - 1 + i]
                masses.append(float(p[p > p[token]].sum()))  # mass of strictly likelier tokens
        return np.array(masses)

    assert (mass_before(0.3) < 0.3 + 1e-6).all()
    assert (mass_before(1.0) >= 0.3).mean() > 0.3  # without truncation the tail is sampled often


def test_temperature_zero_is_greedy(model, tokenizer):
    request = SampleRequest(prompt(tokenizer, "Q: 1"), n=3, max_new_tokens=10, temperature=0.0, seed=1)
    samples = engine(model, tokenizer).sample([request])[0]
    assert len({s.token_ids for s in samples}) == 1
    ids = [*request.prompt_ids, *samples[0].token_ids]
    logits = forward_logits(model, ids)[len(request.prompt_ids) - 1 : -1]
    assert samples[0].token_ids == tuple(logits.argmax(-1).tolist())
    np.testing.assert_allclose(samples[0].logprobs, torch.log_softmax(logits, -1).max(-1).values, atol=1e-5)


def test_choose_tokens_frequencies_follow_the_distribution():
    # 20000 draws from p = (0.5, 0.3, 0.2): each frequency within 4 standard errors (<= 0.0144)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(20000, 3)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tokens, _ = choose_tokens(logits, u, torch.ones(20000), torch.ones(20000))
    np.testing.assert_allclose(np.bincount(tokens.numpy(), minlength=3) / 20000, [0.5, 0.3, 0.2], atol=0.0144)


# ---------------------------------------------------------------- counters, progress, errors


def test_stats_and_progress(model, tokenizer):
    requests = [
        SampleRequest(prompt(tokenizer, "Q: 12"), n=3, max_new_tokens=5, temperature=1.0),  # prompt 6 tokens
        SampleRequest(prompt(tokenizer, "Q"), n=2, max_new_tokens=4, temperature=1.0),  # prompt 2 tokens
    ]
    done = []
    eng = engine(model, tokenizer)
    eng.sample(requests, progress=done.append)
    # prompt tokens 6*3 + 2*2 = 22; prefilled once each 6 + 2 = 8; shared 6*2 + 2*1 = 14; sampled 3*5 + 2*4 = 23
    assert eng.stats == EngineStats(
        requests=2, samples=5, prompt_tokens=22, prefill_tokens=8, shared_prefix_tokens=14, sampled_tokens=23
    )
    assert sum(done) == 5
    naive = engine(model, tokenizer, share_prefix=False)
    naive.sample(requests)
    assert (naive.stats.prefill_tokens, naive.stats.shared_prefix_tokens) == (22, 0)


def test_bad_requests_are_refused(model, tokenizer):
    with pytest.raises(ValueError, match="n is 0, expected >= 1; top_p is 0"):
        SampleRequest((1,), n=0, max_new_tokens=1, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        SampleRequest((), n=1, max_new_tokens=1, temperature=1.0)
    too_long = SampleRequest((1,) * 2000, n=1, max_new_tokens=100, temperature=1.0)
    with pytest.raises(
        ValueError, match="request 0: prompt of 2000 tokens \\+ max_new_tokens 100 exceeds .* 2048"
    ):
        engine(model, tokenizer).sample([too_long])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine(model, tokenizer).sample([SampleRequest((1, 10**6), n=1, max_new_tokens=1, temperature=1.0)])
    with pytest.raises(ValueError, match="unknown engine 'hf'; choose one of \\['transformers', 'vllm'\\]"):
        make_engine("hf", "nowhere")
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported .* \\['llama', 'qwen2'\\]"):
        TransformersEngine(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)), tokenizer)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        TransformersEngine.load("nowhere", device="cpu", dtype="fp8")


# ---------------------------------------------------------------- checkpoints


def test_save_load_round_trip(model, tokenizer, tmp_path):
    eng = engine(model, tokenizer)
    eng.save(tmp_path / "ckpt")
    loaded = make_engine("transformers", tmp_path / "ckpt", device="cpu")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (
        tmp_path / "ckpt" / "tokenizer.json"
    ).is_file()
    prompts, responses = [prompt(tokenizer, "Q: 1"), prompt(tokenizer, TEXT)], [tokenizer.encode("23+4"), [5]]
    for a, b in zip(eng.score(prompts, responses, 0.6), loaded.score(prompts, responses, 0.6)):
        np.testing.assert_array_equal(a, b)
    request = SampleRequest(prompts[0], n=2, max_new_tokens=8, temperature=1.0, seed=3)
    assert_same_samples(eng.sample([request]), loaded.sample([request]))  # log-probs differ by <= 1 ulp here
    assert loaded.tokenizer.decode(tokenizer.encode(TEXT)) == TEXT


# ---------------------------------------------------------------- response_logprobs and the decoder


def test_response_logprobs_matches_a_plain_loop_and_has_gradients(model, tokenizer):
    prompts = [prompt(tokenizer, "Q: 23"), prompt(tokenizer, "A")]
    responses = [tokenizer.encode("+45="), tokenizer.encode("8")]
    logprobs, mask = response_logprobs(model, prompts, responses, temperature=0.6, pad_id=0)
    assert logprobs.shape == (2, 4) and mask.tolist() == [[True] * 4, [True, False, False, False]]
    for b, (p, r) in enumerate(zip(prompts, responses)):  # oracle: one unpadded sequence at a time
        full = torch.log_softmax(forward_logits(model, [*p, *r]) / 0.6, -1)
        expected = full[torch.arange(len(p) - 1, len(p) + len(r) - 1), torch.tensor(r)]
        torch.testing.assert_close(logprobs[b, : len(r)].detach(), expected, atol=1e-5, rtol=0)
    model.zero_grad()
    logprobs[mask].sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize(
    "layout",
    [
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=40,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
            )
        ),  # grouped-query attention
        Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=40,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                intermediate_size=64,
                tie_word_embeddings=True,
            )
        ),
    ],
    ids=["llama-gqa", "qwen2"],
)
def test_decode_step_matches_the_full_forward_pass(layout):
    prompts, per_group = [(1, 4, 5, 6, 7), (1, 8)], 3
    sequences = [list(p) for p in prompts for _ in range(per_group)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        prefix, logits = prefill(layout, prompts, pad_id=0)
        suffix = SuffixCache.allocate(layout, len(sequences), 4, like=prefix.keys[0])
        torch.testing.assert_close(
            logits[1], layout(torch.tensor([prompts[1]])).logits[0, -1], atol=1e-5, rtol=0
        )
        for step in range(4):
            tokens = torch.randint(3, 40, (len(sequences),), generator=generator)
            for sequence, token in zip(sequences, tokens.tolist()):
                sequence.append(token)
            logits = decode_step(
                layout, tokens, prefix.lengths.repeat_interleave(per_group) + step, prefix, suffix
            )
            for row, sequence in enumerate(sequences):
                expected = layout(torch.tensor([sequence])).logits[0, -1]
                torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=0)
