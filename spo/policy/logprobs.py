"""Teacher-forced log-probs of response tokens, shared by `Engine.score` and the PPO trainer."""

from collections.abc import Sequence

import torch


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    temperature: float,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the log-prob of each response token given its prompt and the tokens before it.

    Rows are prompt + response, right-padded with `pad_id`; causal attention means padding never
    influences a real token, so no attention mask is needed. Only the response positions go through
    the output layer, and the log-softmax of logits / temperature is taken in float32 (docs/design.md#probabilities).
    Differentiable when grad is enabled.

    Args:
        model: a Hugging Face causal LM (`get_decoder()` and `get_output_embeddings()`).
        prompt_ids: B prompts, each at least one token.
        response_ids: B responses (may be empty).
        temperature: divides the logits; > 0.
        pad_id: token used to pad rows (any valid id).

    Returns:
        (B, T) float32 log-probs (0 where masked) and (B, T) bool mask of real response tokens;
        T is the longest response.

    >>> from spo.policy.tiny import build_char_tokenizer, build_tiny_model
    >>> tok = build_char_tokenizer(["abc"])
    >>> model = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    >>> logprobs, mask = response_logprobs(model, [[1, 4], [1]], [[5, 6, 2], [4]], 1.0, tok.pad_token_id)
    >>> logprobs.shape, logprobs.dtype, mask.tolist()
    (torch.Size([2, 3]), torch.float32, [[True, True, True], [True, False, False]])
    """
    if not temperature > 0:
        raise ValueError(f"temperature is {temperature}, expected > 0")
    input_ids, mask, positions = packed_rows(prompt_ids, response_ids, pad_id, next(model.parameters()).device)
    targets = input_ids.gather(1, (positions + 1).clamp(max=input_ids.shape[1] - 1))  # (B, T), real where mask
    if is_fsdp(model):  # parameters gather in the root's forward
        logits = model(input_ids=input_ids).logits  # (B, L, V)
        logits = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1])).float() / temperature
    else:  # the output layer only where a response token is predicted
        hidden = model.get_decoder()(input_ids=input_ids).last_hidden_state  # (B, L, H)
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, T, H)
        logits = model.get_output_embeddings()(hidden).float() / temperature  # (B, T, V)
    logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)  # (B, T)
    return logprobs.masked_fill(~mask, 0.0), mask


def is_fsdp(model: torch.nn.Module) -> bool:
    """Whether `model` is sharded by FSDP2 (`fully_shard`)."""
    return hasattr(model, "set_requires_gradient_sync")


def packed_rows(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + response per row, right-padded with `pad_id` (B, L); the mask of real response tokens
    (B, T), T the longest response; and the position (B, T) that ends the state before each response
    token: token t of a response is predicted at prompt_length - 1 + t (clamped inside the row where masked).
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    empty = [b for b, prompt in enumerate(prompt_ids) if len(prompt) == 0]
    if empty:
        raise ValueError(f"prompts {empty[:5]} are empty; each needs at least one token")
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids], device=device)
    response_lengths = torch.tensor([len(r) for r in response_ids], device=device)
    longest, steps = int((prompt_lengths + response_lengths).max()), int(response_lengths.max())
    input_ids = torch.full((len(prompt_ids), longest), pad_id, dtype=torch.long)  # (B, L)
    for b, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[b, : len(prompt) + len(response)] = torch.tensor([*prompt, *response], dtype=torch.long)
    offsets = torch.arange(steps, device=device)
    mask = offsets[None, :] < response_lengths[:, None]  # (B, T)
    positions = (prompt_lengths[:, None] - 1 + offsets[None, :]).clamp(max=longest - 1)  # (B, T)
    return input_ids.to(device), mask, positions
