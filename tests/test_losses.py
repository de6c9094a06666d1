"""Tests for spo/losses.py: hand-computed loss terms, loop oracles, a tiny real LM, the LR schedule."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spo.losses import masked_mean, masked_whiten, policy_loss
from spo.objectives import LOSS_AGGREGATIONS
from spo.schedules import warmup_constant, warmup_linear_decay

shapes = st.tuples(st.integers(1, 4), st.integers(1, 12))
seeds = st.integers(0, 2**31 - 1)
torch_examples = settings(deadline=None)  # torch's first calls can be slow on a busy 2-core machine


def random_batch(shape, seed, log_ratio_scale=0.5):
    """(logp, old_logp, ref_logp, adv, mask) of one (B, T) shape from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(shape, generator=g) * 3
    logp = old + log_ratio_scale * torch.randn(shape, generator=g)
    ref = old + 0.5 * torch.randn(shape, generator=g)
    adv = torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < 0.7
    return logp, old, ref, adv, mask


# --- masked_mean / masked_whiten ---------------------------------------------------------------------


def test_masked_mean_hand_cases():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, math.inf]])
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 3 + 5) / 3)  # inf is outside the mask
    assert masked_mean(x, mask, dim=1).tolist() == [2.0, 5.0]  # (1 + 3)/2, 5/1
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # denominator clamped to 1


def test_masked_whiten_hand_case():
    # masked values 1, 2, 6: mean 3, unbiased var ((-2)^2 + 1^2 + 3^2) / 2 = 7 -> (A - 3) / sqrt(7)
    adv = torch.tensor([[1.0, 2.0, 50.0], [6.0, -9.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = torch.tensor([[-2.0, -1.0, 0.0], [3.0, 0.0, 0.0]]) / math.sqrt(7 + 1e-8)
    torch.testing.assert_close(masked_whiten(adv, mask), expected)


def test_masked_whiten_falls_back_to_the_response_mask():
    # no token with p < tau: statistics over the response tokens 2, 4 -> mean 3, var 2
    adv = torch.tensor([[2.0, 4.0, 99.0]])
    empty, response = torch.zeros(1, 3, dtype=torch.bool), torch.tensor([[True, True, False]])
    expected = torch.tensor([[-1.0, 1.0, 0.0]]) / math.sqrt(2 + 1e-8)
    torch.testing.assert_close(masked_whiten(adv, empty, fallback_mask=response), expected)
    with pytest.raises(ValueError, match="mask: empty and no fallback_mask"):
        masked_whiten(adv, empty)


def test_masked_whiten_single_token_and_equal_values_give_zero():
    one = torch.tensor([[False, True, False]])
    assert masked_whiten(torch.tensor([[1.0, 7.0, 3.0]]), one).tolist() == [[0.0, 0.0, 0.0]]
    # two tree edges of equal advantage in one micro-batch whiten to 0 (reference P13)
    assert masked_whiten(torch.full((2, 3), 0.5), torch.ones(2, 3)).abs().max().item() == 0.0


def test_masked_whiten_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 3\) like adv, got \(1, 2\)"):
        masked_whiten(torch.zeros(1, 3), torch.ones(1, 2))


@torch_examples
@given(shapes, seeds)
def test_masked_whiten_standardises_on_the_mask(shape, seed):
    _, _, _, adv, mask = random_batch(shape, seed)
    assume(mask.any())  # the empty case is the fallback test above
    white = masked_whiten(adv, mask).double()
    n = int(mask.sum())
    values = [adv[b, t].item() for b in range(shape[0]) for t in range(shape[1]) if mask[b, t]]
    assert (white[~mask] == 0).all()
    if n >= 2:  # plain-loop oracle, then the defining property
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) + 1e-8)
        oracle = [(v - mean) / std for v in values]
        assert white[mask].tolist() == pytest.approx(oracle, abs=1e-5)
        if std > 0.1:
            assert white[mask].mean().item() == pytest.approx(0.0, abs=1e-5)
            assert white[mask].var(unbiased=True).item() == pytest.approx(1.0, abs=1e-5)


# --- policy_loss -------------------------------------------------------------------------------------


def test_policy_loss_hand_case_with_clipping_and_kl():
    # ratio e^0.5 = 1.6487 on both tokens; clipped ratio 1.2.
    # A = +1: max(-1.6487, -1.2) = -1.2 (clipped);  A = -1: max(1.6487, 1.2) = 1.6487 (unclipped)
    # policy = (-1.2 + 1.6487) / 2 = 0.22436
    # KL: d = ref - logp = ln 2 -> k3 = 2 - ln 2 - 1 = 0.30685 per token; one sequence of 2 tokens:
    # kl = 1e-2 * 2 * 0.30685 = 0.0061371
    old = torch.tensor([[-1.0, -1.0]])
    logp = (old + 0.5).requires_grad_()
    ref = logp.detach() + math.log(2)
    out = policy_loss(logp, old, ref, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), clip=0.2, kl_coef=1e-2)
    assert out.policy.item() == pytest.approx((-1.2 + math.exp(0.5)) / 2)
    assert out.kl.item() == pytest.approx(1e-2 * 2 * (1 - math.log(2)))
    assert out.total.item() == pytest.approx(out.policy.item() + out.kl.item())
    assert out.ratio_mean.item() == pytest.approx(math.exp(0.5))
    assert out.clip_fraction.item() == 1.0  # |1.6487 - 1| > 0.2 on both tokens
    assert out.approx_kl.item() == pytest.approx(math.exp(0.5) - 1 - 0.5)  # r - 1 - log r
    out.total.backward()
    assert logp.grad is not None and torch.isfinite(logp.grad).all()


def test_kl_sums_over_tokens_and_averages_over_sequences():
    # per-token k3 with d = ln 2 is c = 1 - ln 2; sequence 0 has 3 masked tokens, sequence 1 has 1:
    # kl = beta * (3c + 1c) / 2 sequences = beta * 2c
    z = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = policy_loss(z, z, z + math.log(2), z, mask, kl_coef=1.0)
    assert out.kl.item() == pytest.approx(2 * (1 - math.log(2)))
    assert out.policy.item() == 0.0  # A = 0


def loop_policy_loss(logp, old, ref, adv, mask, clip, kl_coef):
    """Plain-loop transcription of docs/design.md#loss on Python floats."""
    batch, length = logp.shape
    pg_sum, n, kl_per_sequence = 0.0, 0, []
    for b in range(batch):
        kl_sum = 0.0
        for t in range(length):
            if not mask[b, t]:
                continue
            r = math.exp(min(max(logp[b, t].item() - old[b, t].item(), -10), 10))
            a = adv[b, t].item()
            pg_sum += max(-a * r, -a * min(max(r, 1 - clip), 1 + clip))
            n += 1
            d = min(max(ref[b, t].item() - logp[b, t].item(), -10), 10)
            kl_sum += min(max(math.exp(d) - d - 1, 0.0), 1e9)
        kl_per_sequence.append(kl_sum)
    return pg_sum / max(n, 1), kl_coef * sum(kl_per_sequence) / batch


@torch_examples
@given(shapes, seeds, st.sampled_from([0.05, 0.5, 15.0]))
def test_policy_loss_matches_the_loop_oracle(shape, seed, log_ratio_scale):
    logp, old, ref, adv, mask = random_batch(shape, seed, log_ratio_scale)  # scale 15 hits the clamps
    out = policy_loss(logp, old, ref, adv, mask, clip=0.2, kl_coef=1e-2)
    policy, kl = loop_policy_loss(logp, old, ref, adv, mask, clip=0.2, kl_coef=1e-2)
    assert out.policy.item() == pytest.approx(policy, rel=1e-4, abs=1e-5)
    assert out.kl.item() == pytest.approx(kl, rel=1e-4, abs=1e-6)


@torch_examples
@given(shapes, seeds)
def test_ppo_clip_is_the_plain_surrogate_inside_the_clip_range(shape, seed):
    logp, old, ref, adv, mask = random_batch(shape, seed)
    g = torch.Generator().manual_seed(seed)
    logp = old + torch.empty(shape).uniform_(math.log(0.81), math.log(1.19), generator=g)  # r in (0.81, 1.19)
    out = policy_loss(logp, old, ref, adv, mask, clip=0.2)
    torch.testing.assert_close(out.policy, masked_mean(-adv * torch.exp(logp - old), mask))
    assert out.clip_fraction.item() == 0.0


def test_masked_tokens_and_padding_do_not_matter():
    logp, old, ref, adv, mask = random_batch((3, 6), seed=7)
    base = policy_loss(logp, old, ref, adv, mask)
    # padding (-1e9 log-probs, huge advantages) outside the mask changes nothing and stays finite
    pad = ~mask
    padded = [torch.where(pad, torch.full_like(x, -1e9), x) for x in (logp, old, ref)]
    out = policy_loss(*padded, torch.where(pad, torch.full_like(adv, 1e6), adv), mask)
    torch.testing.assert_close(out.total, base.total)


def test_shape_mismatch_raises():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"expected all inputs of one \(B, T\) shape, got .*'adv': \(2, 2\)"):
        policy_loss(z, z, z, torch.zeros(2, 2), z)


# --- policy-loss choices (docs/design.md#policy-loss-choices) ----------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("token_mean", -2.5),  # (-1 - 2 - 3 - 4) / 4 tokens
    ("seq_mean_token_sum_norm", -0.625),  # sums -6 and -4, each / L = 8: (-0.75 - 0.5) / 2 sequences
    ("seq_mean_token_mean", -3.0),  # means -6 / 3 = -2 and -4 / 1 = -4: (-2 - 4) / 2 sequences
])
def test_each_aggregation_on_a_hand_example(name, expected):
    # r = 1 everywhere, so each masked token's loss is -A: sequence 0 has -1, -2, -3; sequence 1 has -4
    z = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])  # 50, 60 lie outside the mask
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    weights = torch.tensor(LOSS_AGGREGATIONS[name].sequence_weights([3, 1], 8))
    out = policy_loss(z, z, z, adv, mask, sequence_weights=weights)
    assert out.policy.item() == pytest.approx(expected)
    assert policy_loss(z, z, z, adv, mask).policy.item() == pytest.approx(-2.5)  # the reference: token mean


def test_clip_high_moves_only_the_upper_bound():
    # ratios e^0.3 = 1.3499 (A = +1) and e^-0.5 = 0.6065 (A = -1), clip 0.2:
    # symmetric: max(-1.3499, -1.2) = -1.2 and max(0.6065, 0.8) = 0.8 -> policy (-1.2 + 0.8) / 2 = -0.2
    # clip_high 0.28: the first becomes max(-1.3499, -1.28) = -1.28 -> (-1.28 + 0.8) / 2 = -0.24
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.3, -0.5]])
    adv, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    assert policy_loss(logp, old, old, adv, mask).policy.item() == pytest.approx(-0.2)
    assert policy_loss(logp, old, old, adv, mask, clip_high=0.28).policy.item() == pytest.approx(-0.24)
    # the clip fraction reads the same bounds: r = 1.25 is inside [0.8, 1.28], outside [0.8, 1.2]
    inside = torch.tensor([[math.log(1.25), -0.5]])
    assert policy_loss(inside, old, old, adv, mask).clip_fraction.item() == 1.0
    assert policy_loss(inside, old, old, adv, mask, clip_high=0.28).clip_fraction.item() == 0.5


def test_sequence_ratio_gives_each_token_the_sequence_ratio_and_its_own_gradient():
    # log-ratios 0.2 and 0.4 (a third token is masked out): s = exp(0.3) = 1.3499 on both tokens. With A = 1,
    # clip 0.5 (inside the range) and each sequence's token mean, policy = -s and d policy / d logp_t = -s / 2:
    # GSPO's sequence-level gradient, -s * d mean_t(logp_t) / d logp_t.
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    logp = (old + torch.tensor([[0.2, 0.4, 9.0]])).requires_grad_()
    mask = torch.tensor([[1, 1, 0]])
    weights = torch.tensor(LOSS_AGGREGATIONS["seq_mean_token_mean"].sequence_weights([2], 8))
    out = policy_loss(logp, old, old.clone(), torch.ones(1, 3), mask, clip=0.5, sequence_ratio=True,
                      sequence_weights=weights)
    s = math.exp(0.3)
    assert out.policy.item() == pytest.approx(-s)
    assert out.ratio_mean.item() == pytest.approx(s)
    out.policy.backward()
    assert logp.grad[0].tolist() == pytest.approx([-s / 2, -s / 2, 0.0])
    # the sequence ratio is clipped as a whole: with clip 0.2 both tokens sit at 1.2 and carry no gradient
    logp.grad = None
    clipped = policy_loss(logp, old, old.clone(), torch.ones(1, 3), mask, sequence_ratio=True)
    clipped.policy.backward()
    assert clipped.clip_fraction.item() == 1.0 and logp.grad.abs().max().item() == 0.0


def test_sequence_weights_must_match_the_batch():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sequence_weights: expected shape \(2,\), got \(3,\)"):
        policy_loss(z, z, z, z, z, sequence_weights=torch.ones(3))


class TinyLM(torch.nn.Module):
    """A real (tiny) causal LM: embedding -> GRU -> vocabulary logits."""

    def __init__(self, vocab: int = 13, width: int = 16, seed: int = 0):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.rnn = torch.nn.GRU(width, width, batch_first=True)
        self.head = torch.nn.Linear(width, vocab)
        g = torch.Generator().manual_seed(seed)  # seeded weights, no global RNG
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(0.3 * torch.randn(param.shape, generator=g))

    def token_logp(self, tokens: torch.Tensor, temperature: float = 0.6) -> torch.Tensor:
        """(B, T - 1) log-probs of tokens[:, 1:] given the prefix, logits / temperature (docs/design.md#probabilities)."""
        hidden, _ = self.rnn(self.embed(tokens[:, :-1]))
        logp = torch.log_softmax(self.head(hidden).float() / temperature, dim=-1)
        return logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_step_on_a_tiny_lm_moves_masked_logp_with_the_advantage(sign):
    model = TinyLM()
    tokens = torch.randint(0, 13, (4, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        old = model.token_logp(tokens)  # (4, 8); also the frozen reference here
    mask = torch.exp(old) < 0.9  # the probability mask (docs/design.md#threshold)
    adv = masked_whiten(torch.full_like(old, sign), mask)  # equal advantages whiten to 0 ...
    assert adv.abs().max().item() == 0.0
    adv = torch.full_like(old, sign) * mask  # ... so use raw +-1 advantages
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = policy_loss(model.token_logp(tokens), old, old, adv, mask)
    out.total.backward()
    optimizer.step()
    with torch.no_grad():
        change = masked_mean(model.token_logp(tokens) - old, mask).item()
    assert sign * change > 0  # positive advantage raises the sampled tokens' log-probs


def test_gradient_ignores_advantages_outside_the_mask():
    model = TinyLM()
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        old = model.token_logp(tokens)
    mask = torch.tensor([[1, 0, 1, 0, 1, 0], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    grads = []
    for outside in (0.0, 123.0):
        model.zero_grad()
        adv = torch.where(mask, torch.linspace(-1, 1, 6).expand(2, 6), torch.tensor(outside))
        policy_loss(model.token_logp(tokens), old, old, adv, mask).total.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


# --- warmup_linear_decay ----------------------------------------------------------------------------


def test_warmup_linear_decay_hand_values():
    # warm-up 4: 1/4, 2/4, 3/4, 4/4; then (10 - s) / (10 - 4) for s = 4..10
    got = [warmup_linear_decay(s, total_steps=10, warmup_steps=4) for s in range(12)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.0])
    assert warmup_linear_decay(0, total_steps=4, warmup_steps=0) == 1.0  # no warm-up


def test_warmup_linear_decay_drives_lambda_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_linear_decay(s, 5, 1))
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-6, 1e-6, 0.75e-6, 0.5e-6, 0.25e-6, 0.0])


def test_warmup_constant_hand_values():
    got = [warmup_constant(s, total_steps=10, warmup_steps=4) for s in range(12)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0] + [1.0] * 8)  # the same warm-up, then no decay


@pytest.mark.parametrize(("step", "total", "warmup"), [(-1, 10, 1), (0, 10, 10), (0, 10, -1)])
def test_warmup_linear_decay_rejects_bad_arguments(step, total, warmup):
    with pytest.raises(ValueError, match="expected step >= 0 and 0 <= warmup_steps < total_steps"):
        warmup_linear_decay(step, total, warmup)


@settings(max_examples=200)
@given(st.integers(0, 500), st.integers(1, 300), st.integers(0, 299))
def test_warmup_linear_decay_stays_in_unit_interval(step, total, warmup):
    if warmup < total:
        assert 0.0 <= warmup_linear_decay(step, total, warmup) <= 1.0
