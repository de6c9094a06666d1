"""The critic of PPO: a copy of the initial policy with a scalar value head (docs/design.md#baselines).

A Hugging Face token-classification model with one label is exactly that: the policy's decoder and a
linear head from each position's hidden state to a number. The head starts from a seeded generator,
and the critic saves and loads in Hugging Face format with its head. The value of state s_t (the
prompt and the first t response tokens) is read at the position of the last token of s_t.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from spo.policy.logprobs import packed_rows


def create_critic(policy: str | Path, seed: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A value model: the policy checkpoint's decoder with a new scalar head drawn from N(0, 0.02) seeded by `seed`."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    # no dropout before the head: training must be a function of its inputs and seeds (docs/design.md#seeds)
    config = AutoConfig.from_pretrained(policy, num_labels=1)
    config.classifier_dropout = 0.0  # an attribute the config class does not declare: set, not passed
    model = AutoModelForTokenClassification.from_pretrained(policy, config=config, dtype=dtype)
    head = model.score if hasattr(model, "score") else model.classifier
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.02)
        if head.bias is not None:
            head.bias.zero_()
    return model


def load_critic(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A saved critic, in float32 (its AdamW steps need the precision, as the policy's)."""
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification.from_pretrained(path, dtype=torch.float32).to(device)


def state_values(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]],
                 response_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return V(s_t) for each response token t (the state before it) and the mask of real tokens.

    Rows are prompt + response, right-padded (causal attention: padding never reaches a real position).
    Differentiable when grad is enabled.

    Returns:
        (B, T) float32 values (0 where masked) and (B, T) bool mask; T is the longest response.

    >>> from spo.policy.tiny import build_char_tokenizer, build_tiny_model
    >>> import tempfile
    >>> tok = build_char_tokenizer(["abc"])
    >>> folder = tempfile.mkdtemp()
    >>> build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32).save_pretrained(folder)
    >>> values, mask = state_values(create_critic(folder, seed=0), [[1, 4], [1]], [[5, 6], [4]], tok.pad_token_id)
    >>> values.shape, mask.tolist()
    (torch.Size([2, 2]), [[True, True], [True, False]])
    """
    input_ids, mask, positions = packed_rows(prompt_ids, response_ids, pad_id, next(model.parameters()).device)
    scores = model(input_ids=input_ids).logits[..., 0].float()  # (B, L)
    return scores.gather(1, positions).masked_fill(~mask, 0.0), mask  # V(s_t): the state ends at positions


def score_states(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                 pad_id: int, batch_size: int = 64) -> list[np.ndarray]:
    """V(s_t) of every response token, without grad, in batches; result[b] has len(response_ids[b]) values."""
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(prompt_ids), batch_size):
            values, _ = state_values(model, prompt_ids[start : start + batch_size],
                                     response_ids[start : start + batch_size], pad_id)
            out += [values[b, : len(r)].cpu().numpy() for b, r in enumerate(response_ids[start : start + batch_size])]
    return out
