"""Decoding K samples per prompt against one shared, never-repeated prompt KV cache.

A batch holds G prompts ("groups") and K sample rows per group, B = G * K rows, group-major. Each
prompt is prefilled once (`prefill`); its keys and values stay (G, kv_heads, P, d). At each decode
step the K queries of a group attend to that one copy (a single batched matmul per group) and to
their own suffix of sampled tokens, which lives in a preallocated buffer. Nothing is repeated K
times and nothing is concatenated per step, so the per-step memory traffic is G * P + B * t rather
than B * (P + t) key/value vectors: this is where prefix sharing beats naive sampling on a CPU.

The decode step re-runs the decoder layers' own modules (norms, projections, MLP, rotary
embedding) with this two-part attention; it supports the Llama and Qwen2 layouts (`SUPPORTED`). The
prefill runs the decoder's own forward and keeps what its key and value projections output (forward
hooks), rotating the keys as the layers do: nothing depends on how a transformers version lays out
its KV cache.
"""

from dataclasses import dataclass

import torch

SUPPORTED = ("llama", "qwen2")
"""config.model_type values whose decoder layers `decode_step` re-runs."""


def check_supported(model: torch.nn.Module) -> None:
    """Raise unless `model` is a decoder layout `decode_step` reproduces."""
    config = model.config
    if config.model_type not in SUPPORTED:
        raise ValueError(
            f"model_type {config.model_type!r} is not supported by the prefix-sharing decoder; "
            f"choose one of {sorted(SUPPORTED)}"
        )
    if getattr(config, "use_sliding_window", False):
        raise ValueError(f"{config.model_type} with use_sliding_window=True is not supported")


@dataclass
class PrefixCache:
    """Keys and values of G right-padded prompts, per layer (G, kv_heads, P, d)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor
    """(G, P) bool, True at real prompt tokens."""
    lengths: torch.Tensor
    """(G,) prompt lengths."""

    def select(self, groups: torch.Tensor) -> "PrefixCache":
        """Keep only `groups` (indices into G)."""
        return PrefixCache(
            [k[groups] for k in self.keys],
            [v[groups] for v in self.values],
            self.key_mask[groups],
            self.lengths[groups],
        )


@dataclass
class SuffixCache:
    """Keys and values of the sampled tokens, per layer a (B, kv_heads, capacity, d) buffer."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    """Filled steps."""

    @classmethod
    def allocate(cls, model: torch.nn.Module, rows: int, capacity: int, like: torch.Tensor) -> "SuffixCache":
        """Empty buffers for `rows` rows and `capacity` steps, dtype and device of `like`."""
        config = model.config
        shape = (rows, config.num_key_value_heads, capacity, _head_dim(config))
        layers = range(config.num_hidden_layers)
        return cls([like.new_empty(shape) for _ in layers], [like.new_empty(shape) for _ in layers])

    def select(self, rows: torch.Tensor) -> "SuffixCache":
        """Keep only `rows` (indices into B)."""
        return SuffixCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.length)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def prefill(
    model: torch.nn.Module, prompts: list[tuple[int, ...]], pad_id: int
) -> tuple[PrefixCache, torch.Tensor]:
    """Run G prompts through the model once; return their cache and next-token logits.

    Prompts are right-padded: causal attention keeps padding out of every real token, and the
    padded key positions are masked in `decode_step`.

    Args:
        model: a supported Hugging Face causal LM.
        prompts: G non-empty token-id tuples.
        pad_id: id used for padding.

    Returns:
        The prefix cache and (G, V) logits at each prompt's last token.
    """
    device = model.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    input_ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long)  # (G, P)
    for g, prompt in enumerate(prompts):
        input_ids[g, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    decoder, captured = model.get_decoder(), {}

    def keep(name: str, index: int):
        def hook(module, args, output):
            captured[name, index] = output
        return hook

    hooks = [layer.self_attn.k_proj.register_forward_hook(keep("k", i)) for i, layer in enumerate(decoder.layers)]
    hooks += [layer.self_attn.v_proj.register_forward_hook(keep("v", i)) for i, layer in enumerate(decoder.layers)]
    try:  # the decoder's own forward; its projections' outputs are the prompt's keys and values
        hidden = decoder(input_ids=input_ids.to(device), use_cache=False).last_hidden_state  # (G, P, H)
    finally:
        for hook in hooks:
            hook.remove()
    last = hidden[torch.arange(len(prompts), device=device), lengths - 1]  # (G, H)
    logits = model.get_output_embeddings()(last)  # (G, V)
    key_mask = torch.arange(input_ids.shape[1], device=device)[None, :] < lengths[:, None]  # (G, P)
    groups, width = input_ids.shape
    positions = torch.arange(width, device=device)[None, :].expand(groups, width)
    cos, sin = decoder.rotary_emb(hidden, positions)  # (G, P, d), as the layers rotate their keys
    keys, values = [], []
    for index, layer in enumerate(decoder.layers):
        dim = layer.self_attn.head_dim
        key = captured["k", index].view(groups, width, -1, dim).transpose(1, 2)  # (G, kvh, P, d)
        keys.append(_rotate(key, cos[:, None], sin[:, None]))
        values.append(captured["v", index].view(groups, width, -1, dim).transpose(1, 2))
    return PrefixCache(keys, values, key_mask, lengths), logits


def shared_prefix_attention(
    query: torch.Tensor,
    prefix_keys: torch.Tensor,
    prefix_values: torch.Tensor,
    prefix_mask: torch.Tensor,
    suffix_keys: torch.Tensor,
    suffix_values: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Attention of one new query per row over its group's prefix and its own suffix.

    Args:
        query: (B, heads, d) with B = G * K, group-major.
        prefix_keys: (G, kv_heads, P, d); prefix_values likewise.
        prefix_mask: (G, P) bool, True at real prefix tokens.
        suffix_keys: (B, kv_heads, t, d) keys of the row's sampled tokens so far, current one included;
            suffix_values likewise.
        scaling: multiplies the scores (1 / sqrt(d)).

    Returns:
        (B, heads, d) attention output, equal to softmax attention over [prefix, suffix] concatenated.

    >>> q, pk, pv, sk, sv = torch.randn(4, 2, 8), torch.randn(2, 1, 5, 8), torch.randn(2, 1, 5, 8), \\
    ...     torch.randn(4, 1, 3, 8), torch.randn(4, 1, 3, 8)
    >>> mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    >>> out = shared_prefix_attention(q, pk, pv, mask, sk, sv, 8 ** -0.5)
    >>> # oracle: row 3 (group 1) attends to the 3 real prefix tokens and its 3 suffix tokens
    >>> k = torch.cat([pk[1, 0, :3], sk[3, 0]]); v = torch.cat([pv[1, 0, :3], sv[3, 0]])
    >>> ref = torch.softmax(q[3] @ k.T * 8 ** -0.5, -1) @ v
    >>> out.shape, torch.allclose(out[3], ref, atol=1e-6)
    (torch.Size([4, 2, 8]), True)
    """
    groups, kv_heads, prefix_len, dim = prefix_keys.shape
    rows, heads, _ = query.shape
    per_group, per_kv = rows // groups, heads // kv_heads
    # Queries of a group sharing one kv head are stacked so the prefix is read once per group.
    grouped = query.view(groups, per_group, kv_heads, per_kv, dim).transpose(1, 2)  # (G, kvh, K, r, d)
    prefix_scores = grouped.reshape(groups, kv_heads, per_group * per_kv, dim) @ prefix_keys.transpose(-1, -2)
    prefix_scores = prefix_scores.float().masked_fill(~prefix_mask[:, None, None, :], float("-inf"))
    prefix_scores = prefix_scores.view(groups, kv_heads, per_group, per_kv, prefix_len).transpose(1, 2)
    suffix_scores = query.view(rows, kv_heads, per_kv, dim) @ suffix_keys.transpose(-1, -2)  # (B, kvh, r, t)
    scores = torch.cat([prefix_scores.reshape(rows, kv_heads, per_kv, prefix_len), suffix_scores.float()], -1)
    weights = torch.softmax(scores * scaling, dim=-1).to(query.dtype)  # (B, kvh, r, P + t)
    prefix_weights = weights[..., :prefix_len].reshape(groups, per_group, kv_heads, per_kv, prefix_len)
    prefix_weights = prefix_weights.transpose(1, 2).reshape(groups, kv_heads, per_group * per_kv, prefix_len)
    prefix_out = (prefix_weights @ prefix_values).view(groups, kv_heads, per_group, per_kv, dim)
    suffix_out = weights[..., prefix_len:] @ suffix_values  # (B, kvh, r, d)
    out = prefix_out.transpose(1, 2).reshape(rows, kv_heads, per_kv, dim) + suffix_out
    return out.reshape(rows, heads, dim)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as Llama/Qwen2 apply it (rotate_half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def decode_step(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    prefix: PrefixCache,
    suffix: SuffixCache,
) -> torch.Tensor:
    """Feed one token per row, append its keys/values to `suffix`, return next-token logits.

    Args:
        model: a supported Hugging Face causal LM (see `check_supported`).
        tokens: (B,) the tokens just sampled, B = G * K group-major.
        positions: (B,) their positions (prompt length + tokens sampled before them).
        prefix: the groups' prompt cache.
        suffix: the rows' sampled-token cache; its length grows by one.

    Returns:
        (B, V) logits.
    """
    decoder = model.get_decoder()
    rows, step = tokens.shape[0], suffix.length
    hidden = decoder.embed_tokens(tokens[:, None])  # (B, 1, H)
    cos, sin = decoder.rotary_emb(hidden, positions[:, None])  # (B, 1, d)
    for index, layer in enumerate(decoder.layers):
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        query = attention.q_proj(x).view(rows, -1, attention.head_dim)  # (B, heads, d)
        key = attention.k_proj(x).view(rows, -1, attention.head_dim)  # (B, kvh, d)
        value = attention.v_proj(x).view(rows, -1, attention.head_dim)
        query, key = _rotate(query, cos, sin), _rotate(key, cos, sin)
        suffix.keys[index][:, :, step] = key
        suffix.values[index][:, :, step] = value
        out = shared_prefix_attention(
            query,
            prefix.keys[index],
            prefix.values[index],
            prefix.key_mask,
            suffix.keys[index][:, :, : step + 1],
            suffix.values[index][:, :, : step + 1],
            attention.scaling,
        )
        hidden = hidden + attention.o_proj(out.reshape(rows, 1, -1))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    suffix.length = step + 1
    return model.get_output_embeddings()(decoder.norm(hidden[:, 0]))
