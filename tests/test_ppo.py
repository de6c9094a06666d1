"""spo/ppo.py: gradient accumulation, episode order, batch whitening, and the direction of an update."""

import copy
import random

import pytest
import torch

from spo.policy.logprobs import response_logprobs
from spo.policy.tiny import build_char_tokenizer, build_tiny_model
from spo.policy.transformers_engine import set_activation_checkpointing
from spo.ppo import Episode, PPOSettings, batch_whitened, episode_order, epoch_episodes, ppo_step


def tiny():
    tokenizer = build_char_tokenizer(["0123456789+= #"])
    return build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tokenizer


def episodes(model, tokenizer, n=6, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(4, len(tokenizer)) for _ in range(rng.randrange(2, 5))]
        response = [rng.randrange(4, len(tokenizer)) for _ in range(rng.randrange(1, 6))]
        with torch.no_grad():
            logp, _ = response_logprobs(model, [prompt], [response], 1.0, tokenizer.pad_token_id)
        old = logp[0].tolist()
        out.append(Episode(prompt, response, [rng.uniform(-1, 1) for _ in response],
                           [rng.random() < 0.7 for _ in response], old, old))
    return out


def settings(micro: int, whiten: str = "none", **choices) -> PPOSettings:
    return PPOSettings(**{"micro_batch_size": micro, "temperature": 1.0, "pad_id": 0, "clip": 0.2, "kl_coef": 0.0,
                          "whiten": whiten, "grad_clip": 1e9, **choices})


def step(model, batch, micro, whiten="none", **choices):
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = ppo_step(model, optimizer, batch, settings(micro, whiten, **choices))
    return model, metrics


def test_gradient_accumulation_weights_micro_batches_by_size():
    # Three micro-batches of 2 episodes each weigh 2/6 of the batch: with plain SGD (linear in the
    # gradient) the accumulated step is the mean of the three steps each micro-batch takes alone.
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer)
    accumulated, metrics = step(model, batch, micro=2)
    expected = copy.deepcopy(model)
    grads = [torch.zeros_like(p) for p in expected.parameters()]
    for start in range(0, 6, 2):
        part = copy.deepcopy(model)
        optimizer = torch.optim.SGD(part.parameters(), lr=0.1)
        ppo_step(part, optimizer, batch[start : start + 2], settings(2))
        for g, p0, p1 in zip(grads, model.parameters(), part.parameters()):
            g += (p1 - p0).detach() / 3  # each micro-batch holds a third of the batch
    for g, p0, p in zip(grads, model.parameters(), accumulated.parameters()):
        assert torch.allclose(p0 + g, p, atol=1e-6)
    assert metrics["sequences"] == 6 and metrics["tokens"] == sum(sum(e.mask) for e in batch)


def test_first_step_ratio_is_one_and_positive_advantages_gain_probability():
    model, tokenizer = tiny()
    batch = [Episode(e.prompt_ids, e.response_ids, [1.0] * len(e.response_ids), [True] * len(e.response_ids),
                     e.old_logp, e.ref_logp) for e in episodes(model, tokenizer)]
    updated, metrics = step(model, batch, micro=3)
    assert abs(metrics["ratio_mean"] - 1.0) < 1e-5 and metrics["clipfrac"] == 0.0
    with torch.no_grad():
        before, mask = response_logprobs(model, [e.prompt_ids for e in batch], [e.response_ids for e in batch], 1.0, 0)
        after, _ = response_logprobs(updated, [e.prompt_ids for e in batch], [e.response_ids for e in batch], 1.0, 0)
    assert (after - before)[mask].sum() > 0


def test_episode_order_truncates_or_repeats_a_shuffle():
    order = episode_order(5, 12, random.Random(1))
    assert len(order) == 12 and sorted(order[:5]) == list(range(5)) and order[5:10] == order[:5]
    assert sorted(episode_order(5, 3, random.Random(1))) != list(range(5))
    assert sorted(episode_order(5, 0, random.Random(1))) == list(range(5))


def test_batch_whitening_standardises_over_all_masked_tokens():
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer)
    white = batch_whitened(batch)
    masked = torch.tensor([a for e, w in zip(batch, white) for a, m in zip(w, e.mask) if m])
    assert abs(masked.mean()) < 1e-5 and abs(masked.var(unbiased=True) - 1) < 1e-3
    assert all(a == 0.0 for e, w in zip(batch, white) for a, m in zip(w, e.mask) if not m)


def test_a_bf16_step_matches_the_fp32_step_within_bfloat16_rounding():
    """`train.precision = bf16` (stages/training/policy.py): bfloat16 autocast over float32 weights. One step from
    the same weights: the loss agrees to bfloat16's precision (8 bits of mantissa, ~0.4%), the update points the
    same way, and the weights stay float32."""
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer, n=8)
    full, full_metrics = step(model, batch, micro=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half, half_metrics = step(model, batch, micro=4)
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert abs(half_metrics["loss"] - full_metrics["loss"]) <= 0.02 * abs(full_metrics["loss"]) + 1e-3, \
        (half_metrics["loss"], full_metrics["loss"])
    moves = [torch.cat([(p1 - p0).flatten() for p0, p1 in zip(model.parameters(), m.parameters())]) for m in (full, half)]
    assert torch.nn.functional.cosine_similarity(moves[0], moves[1], dim=0) > 0.99


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_sum_norm", "seq_mean_token_mean"])
@pytest.mark.parametrize("whiten", ["batch", "none"])
def test_batch_level_aggregations_make_the_same_step_for_any_micro_batch_size(loss_agg, whiten):
    """docs/design.md#policy-loss-choices: weights from the whole batch, so micro-batches of 2 and of 8 (the whole
    batch) give the same update and loss, KL term included, with either ratio."""
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer, n=8)
    # a reference policy away from the current one, so the KL term has a gradient
    batch = [Episode(e.prompt_ids, e.response_ids, e.advantages, e.mask, e.old_logp, [x - 0.3 for x in e.ref_logp])
             for e in batch]
    chosen = epoch_episodes(batch, settings(8, whiten))
    for ratio in ("token", "sequence"):
        choices = {"loss_agg": loss_agg, "ratio": ratio, "kl_coef": 0.1, "max_new_tokens": 6}
        (small, small_metrics), (whole, whole_metrics) = (step(model, chosen, micro, whiten, **choices)
                                                          for micro in (2, 8))
        for p2, p8, p0 in zip(small.parameters(), whole.parameters(), model.parameters()):
            torch.testing.assert_close(p2, p8, atol=1e-6, rtol=1e-5)
        assert any(not torch.equal(p, p0) for p, p0 in zip(whole.parameters(), model.parameters()))
        for name in ("loss", "loss_policy", "loss_kl"):
            assert small_metrics[name] == pytest.approx(whole_metrics[name], rel=1e-5, abs=1e-7), name


def test_the_reference_aggregation_depends_on_the_micro_batch_size():
    """Why the batch-level modes exist: the reference's token mean per micro-batch, weighted by sequences, gives a
    micro-batch of few tokens the weight of one of many."""
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer, n=8)
    (_, small_metrics), (_, whole_metrics) = (step(model, batch, micro) for micro in (2, 8))
    assert abs(small_metrics["loss_policy"] - whole_metrics["loss_policy"]) > 1e-4


def test_a_batch_level_aggregation_refuses_micro_batch_whitening():
    with pytest.raises(ValueError, match="loss_agg 'token_mean' aggregates over the whole batch; whiten 'micro_"):
        settings(2, "micro_batch", loss_agg="token_mean")
    with pytest.raises(ValueError, match=r"unknown ratio 'segment'; choose one of \['sequence', 'token'\]"):
        settings(2, ratio="segment")


@pytest.mark.parametrize("autocast", [False, True])
def test_activation_checkpointing_trains_the_same_weights_bit_for_bit(autocast):
    """`train.activation_checkpointing` reruns each decoder layer in the backward instead of keeping its tensors:
    the same ops on the same inputs, so three AdamW steps of two micro-batches each (KL and micro-batch whitening
    on) end in bitwise-equal weights and metrics, in float32 and under bf16 autocast (why no stage key reads it,
    spo/config.py). A forward pre-hook counts the layer runs (a post-hook would miss the rerun, which stops once it
    has remade what the backward needs): twice per micro-batch with it, once without, and once in an eval-mode pass
    without grad (sampling and scoring are unchanged)."""
    model, tokenizer = tiny()
    batch = episodes(model, tokenizer, n=8)
    s = PPOSettings(micro_batch_size=4, temperature=0.6, pad_id=0, clip=0.2, kl_coef=0.01, whiten="micro_batch",
                    grad_clip=1.0)
    trained, runs = {}, {}
    for checkpointed in (False, True):
        m = copy.deepcopy(model)
        set_activation_checkpointing(m, checkpointed)
        calls = []
        m.get_decoder().layers[0].register_forward_pre_hook(lambda *_: calls.append(1))  # noqa: B023 (used in the loop)
        optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3)
        m.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            metrics = [ppo_step(m, optimizer, batch, s) for _ in range(3)]
        m.eval()
        with torch.no_grad():
            response_logprobs(m, [batch[0].prompt_ids], [batch[0].response_ids], 0.6, 0)
        trained[checkpointed], runs[checkpointed] = (m, metrics), len(calls)
    (plain, plain_metrics), (rerun, rerun_metrics) = trained[False], trained[True]
    assert runs == {False: 3 * 2 + 1, True: 3 * 2 * 2 + 1}, runs  # 3 steps x 2 micro-batches (x 2: the rerun) + 1
    assert any(not torch.equal(p, p0) for p, p0 in zip(plain.parameters(), model.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), rerun.parameters()))
    assert plain_metrics == rerun_metrics
    set_activation_checkpointing(rerun, False)
    assert not rerun.is_gradient_checkpointing and not rerun._require_grads_hooks


def test_a_bf16_run_learns_like_the_fp32_run():
    """A tiny RL run under `train.precision = bf16` still learns: from the same weights and samples' seeds, 40
    iterations of sampling 16 answers to one prompt, rewarding the answers that start with "7" (group-mean
    baseline) and one PPO step each with AdamW, raise that token's probability from ~1/16 past 0.9 under bf16
    autocast as under fp32 (whose run is the yardstick: the two must end within 0.05). The demo's model in bf16
    would take hours on a CPU without bfloat16 hardware (docs/design.md#optimizer), hence this toy task."""
    model, tokenizer = tiny()
    prompt, target = tokenizer("1+6=", add_special_tokens=False)["input_ids"], tokenizer.convert_tokens_to_ids("7")

    def target_probability(policy) -> float:
        with torch.no_grad():
            logp, _ = response_logprobs(policy, [prompt], [[target]], 1.0, tokenizer.pad_token_id)
        return float(logp.exp())

    def run(bf16: bool) -> float:
        policy = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(40):
            with torch.no_grad():
                logits = policy(input_ids=torch.tensor([prompt])).logits[0, -1].float()
            first = torch.multinomial(logits.softmax(-1), 16, replacement=True, generator=generator).tolist()
            rewards = [float(token == target) for token in first]
            batch = []
            for token, reward in zip(first, rewards):
                with torch.no_grad():
                    old, _ = response_logprobs(policy, [prompt], [[token]], 1.0, tokenizer.pad_token_id)
                batch.append(Episode(prompt, [token], [reward - sum(rewards) / 16], [True], old[0].tolist(),
                                     old[0].tolist()))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                ppo_step(policy, optimizer, batch, settings(8))
        return target_probability(policy)

    start, full, half = target_probability(model), run(bf16=False), run(bf16=True)
    assert start < 0.2 and full > 0.9, (start, full)
    assert half > 0.9 and abs(half - full) < 0.05, (half, full)
