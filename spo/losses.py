"""The training objective: masked statistics, advantage whitening, PPO-clip + k3 KL.

Follows the reference trainer (docs/design.md#whitening, docs/design.md#loss) unless a choice of
docs/design.md#policy-loss-choices says otherwise. All tensors are (B, T): B sequences, T response tokens;
``mask`` is True (or 1) on the tokens that count in the loss (response tokens, AND ``p_old < tau`` under the
probability mask).
"""

from typing import NamedTuple

import torch

WHITEN_EPS = 1e-8
"""Added to the variance before the square root in ``masked_whiten`` (reference TUTIL)."""
LOG_RATIO_CLAMP = 10.0
"""Log-ratios and KL log-differences are clamped to [-10, 10] before exp (docs/design.md#loss)."""
KL_TOKEN_MAX = 1e9
"""Upper clamp of each token's k3 term (reference ``klLoss.jsonnet``)."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Return the mean of ``x`` over ``mask``; the denominator is clamped to >= 1 (empty mask -> 0).

    Values outside the mask are ignored even when they are inf or NaN (padding log-probs of -1e9).

    Args:
        x: (B, T) values.
        mask: (B, T) bool or 0/1 mask.
        dim: reduce over this dim only (e.g. 1 for a per-sequence mean); None reduces all.

    >>> masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
    tensor(2.)
    >>> masked_mean(torch.tensor([[1.0, 3.0]]), torch.tensor([[False, False]]))
    tensor(0.)
    """
    mask = mask.bool()
    masked = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return masked.sum() / mask.sum().clamp(min=1).to(x.dtype)
    return masked.sum(dim) / mask.sum(dim).clamp(min=1).to(x.dtype)


def masked_whiten(
    adv: torch.Tensor, mask: torch.Tensor, fallback_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return ``(A - mean) / sqrt(unbiased var + 1e-8)`` with statistics over ``mask``, 0 outside it.

    When ``mask`` is empty (no token with p < tau in the micro-batch), the statistics use
    ``fallback_mask`` (the response mask) instead, as the reference does (docs/design.md#whitening). Values outside
    the mask used are set to 0 rather than left whitened: no loss term reads them, and zeros keep
    "advantage is zero outside the mask" true downstream. A single masked token has no unbiased
    variance; its variance is taken as 0, so it whitens to 0 (its own mean).

    Args:
        adv: (B, T) float advantages.
        mask: (B, T) bool or 0/1 mask of the tokens that count.
        fallback_mask: (B, T) mask used when ``mask`` is empty; None means no fallback.

    >>> masked_whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))  # mean 2, var 2
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    if adv.shape != mask.shape:
        raise ValueError(f"mask: expected shape {tuple(adv.shape)} like adv, got {tuple(mask.shape)}")
    mask = mask.bool()
    if not mask.any():
        if fallback_mask is None:
            raise ValueError("mask: empty and no fallback_mask given; pass the response mask as fallback")
        mask = fallback_mask.bool()
    mean = masked_mean(adv, mask)
    centered = torch.where(mask, adv - mean, torch.zeros_like(adv))
    n = mask.sum()
    var = (centered**2).sum() / (n - 1).clamp(min=1).to(adv.dtype)  # unbiased: n / (n - 1) correction
    return centered / torch.sqrt(var + WHITEN_EPS)


class PolicyLossOutput(NamedTuple):
    """One micro-batch's loss terms (differentiable) and diagnostics (detached 0-dim tensors)."""

    total: torch.Tensor
    """policy + kl."""
    policy: torch.Tensor
    """PPO-clip surrogate: token mean over the mask, or the weighted mean over sequences of token sums."""
    kl: torch.Tensor
    """kl_coef * k3 KL to the reference policy, summed over masked tokens, averaged over sequences."""
    ratio_mean: torch.Tensor
    """Masked mean of the ratio r in use (per token, or each token's sequence ratio)."""
    clip_fraction: torch.Tensor
    """Fraction of masked tokens whose ratio lies outside [1 - clip, 1 + clip_high]."""
    approx_kl: torch.Tensor
    """k3 estimate of KL(old || new) from the ratio in use, masked token mean: mean(r - 1 - log r)."""


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    kl_coef: float = 1e-4,
    clip_high: float = 0.0,
    sequence_ratio: bool = False,
    sequence_weights: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """Return the PPO-clip + k3-KL loss of one micro-batch (docs/design.md#loss, #policy-loss-choices).

    ``r = exp(clamp(logp - old_logp, -10, 10))``; policy = token mean over the mask of
    ``max(-A r, -A clip(r, 1 - clip, 1 + clip))``; kl = ``kl_coef`` * mean over all B sequences of
    the per-sequence sum over masked tokens of ``clamp(exp(d) - d - 1, 0, 1e9)``,
    ``d = clamp(ref_logp - logp, -10, 10)`` (Schulman's k3 estimator, http://joschu.net/blog/kl-approx.html).
    ``clip_high`` moves the upper bound to ``1 + clip_high`` (DAPO); ``sequence_ratio`` gives every token its
    sequence's ratio (GSPO); ``sequence_weights`` replace the token mean by ``mean_b(w_b * sum_t loss_bt)``.

    Args:
        logp: (B, T) log-probs of the sampled tokens under the policy being trained (with grad).
        old_logp: (B, T) log-probs under the sampling policy.
        ref_logp: (B, T) log-probs under the frozen initial policy.
        adv: (B, T) advantages (already whitened if whitening is on).
        mask: (B, T) bool or 0/1 mask of the tokens in the loss.
        clip: PPO clip range eps; the reference uses 0.2.
        kl_coef: KL coefficient beta; the reference uses 1e-4.
        clip_high: upper clip range; 0 means ``clip``.
        sequence_ratio: r_t = sg[s] * exp(logp_t - sg[logp_t]) with s = exp(masked mean of logp - old_logp
            over the sequence), clamped like the token ratio.
        sequence_weights: (B,) weight of each sequence's token sum (`spo.objectives.LOSS_AGGREGATIONS`);
            None takes the token mean over the mask (the reference).

    >>> z = torch.zeros(1, 2)
    >>> out = policy_loss(z, z, z, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    >>> out.total, out.clip_fraction  # r = 1: mean(-1 * 1, +1 * 1) = 0, no KL
    (tensor(0.), tensor(0.))
    """
    inputs = {"logp": logp, "old_logp": old_logp, "ref_logp": ref_logp, "adv": adv, "mask": mask}
    shapes = {name: tuple(t.shape) for name, t in inputs.items()}
    if len(set(shapes.values())) != 1 or logp.dim() != 2:
        raise ValueError(f"expected all inputs of one (B, T) shape, got {shapes} (spo/losses.py)")
    if sequence_weights is not None and tuple(sequence_weights.shape) != shapes["logp"][:1]:
        raise ValueError(f"sequence_weights: expected shape {shapes['logp'][:1]}, got "
                         f"{tuple(sequence_weights.shape)} (spo/losses.py)")
    mask = mask.bool()
    zeros = torch.zeros_like(logp)
    log_ratio = torch.where(mask, logp - old_logp, zeros)  # padding -1e9 stays out
    if sequence_ratio:  # GSPO-token: the sequence's ratio as the value, each token's own log-prob gradient
        sequence = masked_mean(log_ratio, mask, dim=1).detach()  # (B,)
        log_ratio = torch.where(mask, sequence[:, None] + (logp - logp.detach()), zeros)
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    high = clip_high or clip
    surrogate = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip, 1.0 + high))  # (B, T)
    if sequence_weights is None:
        policy = masked_mean(surrogate, mask)
    else:
        policy = (sequence_weights * torch.where(mask, surrogate, zeros).sum(dim=1)).mean()

    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    k3 = (torch.exp(d) - d - 1.0).clamp(0.0, KL_TOKEN_MAX)  # (B, T)
    kl = kl_coef * torch.where(mask, k3, torch.zeros_like(k3)).sum(dim=1).mean()

    with torch.no_grad():
        ratio_mean = masked_mean(ratio, mask)
        # two one-sided tests: with clip_high = clip exactly |r - 1| > clip, bit for bit
        clipped = ((ratio - 1.0) > high) | ((1.0 - ratio) > clip)
        clip_fraction = masked_mean(clipped.to(ratio.dtype), mask)
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
    return PolicyLossOutput(policy + kl, policy, kl, ratio_mean, clip_fraction, approx_kl)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Return PPO's clipped value loss, ``0.5 * masked_mean(max((V - R)^2, (V_old + clip(V - V_old) - R)^2))``.

    The clip keeps one update from moving a value more than `clip` away from the value that made the
    advantages (reference PPO critic, docs/design.md#baselines).

    Args:
        values: (B, T) the critic's values being trained (with grad).
        old_values: (B, T) the values the advantages were computed from.
        returns: (B, T) the targets, advantage + old value.
        mask: (B, T) the tokens that count.
        clip: how far a value may move per update before its loss stops pulling.

    >>> v, old, r = torch.tensor([[0.5, 1.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    >>> value_loss(v, old, r, torch.ones(1, 2))  # token 0: max(0.25, (0.2 - 1)^2 = 0.64); 0.5 * 0.64 / 2
    tensor(0.1600)
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    worst = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)  # (B, T)
    return 0.5 * masked_mean(worst, mask)

