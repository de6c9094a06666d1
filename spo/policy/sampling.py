"""Per-sample randomness and the token choice of one decoding step.

Each sample owns a CPU generator seeded by (request seed, sample index) and draws one uniform per
step up front; a step picks its token by inverse-CDF on the (nucleus-truncated) distribution. The
result therefore depends only on the sample's own logits and seed, never on its batch mates, and is
the same on CPU and GPU given the same logits.
"""

from collections.abc import Sequence

import numpy as np
import torch


def sample_seed(seed: int, index: int) -> int:
    """Return the generator seed of sample `index` of a request seeded with `seed`.

    SeedSequence hashes the pair, so (1, 0) and (0, 1) get unrelated streams.

    >>> sample_seed(0, 1) == sample_seed(0, 1), sample_seed(0, 1) == sample_seed(1, 0)
    (True, False)
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def sample_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """Return (B, steps) float64 uniforms in [0, 1), row b drawn from a generator seeded with seeds[b].

    >>> u = sample_uniforms([7, 8, 7], steps=3)
    >>> u.shape, bool((u[0] == u[2]).all()), bool((u[0] == u[1]).all())
    (torch.Size([3, 3]), True, False)
    """
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, steps, dtype=torch.float64)


def choose_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row by inverse CDF and return it with its log-prob.

    Tokens are sorted by probability (stable, so ties break by id); the nucleus keeps each token whose
    preceding mass is below top_p; the token is the first whose cumulative kept mass exceeds
    u * (kept mass). Rows with temperature 0 take the argmax. The log-prob is that of
    softmax(logits / temperature) before truncation (temperature 1 for greedy rows).

    Args:
        logits: (B, V) next-token logits (any float dtype; computed in float32).
        uniforms: (B,) one uniform in [0, 1) per row.
        temperature: (B,) >= 0.
        top_p: (B,) in (0, 1].

    Returns:
        (B,) int64 tokens and (B,) float32 log-probs.

    >>> logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]] * 3))
    >>> u = torch.tensor([0.55, 0.9, 0.9])
    >>> # row 0: cdf 0.5, 0.8, 1.0 -> 0.55 falls in token 1; row 1: 0.9 -> token 2;
    >>> # row 2: top_p 0.7 keeps tokens 0, 1 (mass before token 2 is 0.8 >= 0.7), 0.9 * 0.8 = 0.72 -> token 1
    >>> tokens, logprobs = choose_tokens(logits, u, torch.ones(3), torch.tensor([1.0, 1.0, 0.7]))
    >>> tokens.tolist(), [round(x, 4) for x in logprobs.tolist()]
    ([1, 2, 1], [-1.204, -1.6094, -1.204])
    >>> choose_tokens(logits[:1], u[:1], torch.zeros(1), torch.ones(1))[0].tolist()  # greedy
    [0]
    """
    logits = logits.float()
    greedy = temperature <= 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature).to(logits)
    logprobs = torch.log_softmax(logits / scale[:, None], dim=-1)  # (B, V)
    probs, order = logprobs.exp().sort(dim=-1, descending=True, stable=True)
    mass_before = probs.cumsum(-1) - probs
    keep = (mass_before < top_p.to(probs)[:, None]) | (top_p >= 1)[:, None]
    kept = probs * keep
    cdf = kept.cumsum(-1)  # (B, V)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True)
    # Rounding can put the target at the very top of the cdf: clamp to the last kept positive token.
    last_kept = (kept > 0).sum(-1, keepdim=True) - 1
    index = torch.minimum(index, last_kept)
    tokens = order.gather(-1, index).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(-1), tokens)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
