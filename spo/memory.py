"""GPU memory of the parts of a run, in bytes, counted from the model's architecture alone (docs/design.md#memory-plan).

Nothing is allocated and nothing here imports torch: a parameter count is arithmetic on the config.json
values, and the memory of a pass is the tensors it keeps, named one by one below. The counts follow what
transformers' Llama and Qwen2 modules and this project's code do (`spo.policy.logprobs.response_logprobs`,
the transformers engine, torch's AdamW); each one was checked against the bytes a CPU run allocates
(tests/test_memory_plan.py). Which of these parts are resident together in which stage is the plan's
business (stages/runtime/memory_plan.py).

>>> qwen = Architecture.from_config({"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
...     "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
...     "tie_word_embeddings": True, "max_position_embeddings": 32768})
>>> parameter_count(qwen)  # Qwen2.5-0.5B-Instruct, as published
494032768
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

GiB = 2**30

LOGIT_BACKWARD_COPIES = 3
"""Float32 (rows, T, V) tensors the backward adds at once at its top, beyond the logits the forward keeps:
logsumexp's gradient (x - lse, its exp, their product) and the gather's scattered gradient, before they sum."""
TIED_EMBEDDING_GRADIENTS = {False: 3, True: 2}
"""Float32 (V, H) tensors at once at the end of the backward of a tied embedding (key: bf16 autocast): the
output layer's gradient waits in autograd's buffer for the embedding's, then the two are summed; under
autocast the waiting one is a fresh cast the sum reuses, in float32 the matmul's transposed result is not."""
SCORING_BYTES_PER_LOGIT = 8
"""Bytes per logit while scoring without grad: the float32 logits / temperature and logsumexp's temporary."""
SAMPLING_BYTES_PER_LOGIT = 42
"""Bytes per (row, vocabulary entry) of `spo.policy.sampling.choose_tokens`: the float32 copy, log-softmax,
its exp, the sort's values and int64 indices, the cumulative sums and the nucleus mask."""
MLP_BACKWARD_COPIES = 2
"""(tokens, intermediate) gradients, in the compute dtype, that a decoder layer's backward adds at once beyond
what the layer kept: those of silu(gate) and of up, made together by their product's backward."""
ADAMW_STEP_BYTES = 4
"""Bytes per parameter that a foreach AdamW step (torch's default on a GPU) allocates: sqrt(v) of every
tensor at once."""


class Architecture(NamedTuple):
    """The shape of a Llama or Qwen2 causal LM, from its config.json values."""

    layout: str
    """config.json's model_type: "llama" or "qwen2"."""
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    """The output layer is the input embedding (one matrix)."""
    qkv_bias: bool
    """Biases on the q, k and v projections (Qwen2; Llama's attention_bias)."""
    o_bias: bool
    """A bias on the output projection (Llama's attention_bias)."""
    mlp_bias: bool
    """Biases on the gate, up and down projections (Llama's mlp_bias)."""
    max_positions: int
    """max_position_embeddings: the longest sequence (vLLM's default max_model_len)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """From a config.json mapping (or a transformers config's `to_dict()`)."""
        layout = config.get("model_type")
        if layout not in ("llama", "qwen2"):
            raise ValueError(f"model_type {layout!r}: the memory plan counts the llama and qwen2 layouts only, "
                             f"as the transformers engine serves (spo/memory.py)")
        heads, hidden = config["num_attention_heads"], config["hidden_size"]
        attention_bias = layout == "llama" and config.get("attention_bias", False)
        return cls(layout, config["vocab_size"], hidden, config["num_hidden_layers"], heads,
                   config.get("num_key_value_heads") or heads, config.get("head_dim") or hidden // heads,
                   config["intermediate_size"], config.get("tie_word_embeddings", False),
                   layout == "qwen2" or attention_bias, attention_bias,
                   layout == "llama" and config.get("mlp_bias", False), config["max_position_embeddings"])

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def layer_parameters(arch: Architecture) -> int:
    """Parameters of one decoder layer: q, k, v, o, gate, up, down and two norms, with their biases."""
    h, q, kv, i = arch.hidden, arch.q_width, arch.kv_width, arch.intermediate
    weights = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    return weights + arch.qkv_bias * (q + 2 * kv) + arch.o_bias * h + arch.mlp_bias * (2 * i + h)


def parameter_count(arch: Architecture) -> int:
    """Every parameter: the embedding, the layers, the final norm and an untied output layer."""
    embedding = arch.vocab * arch.hidden
    return embedding * (1 if arch.tied else 2) + arch.layers * layer_parameters(arch) + arch.hidden


def autocast_copy_bytes(arch: Architecture) -> int:
    """The bfloat16 copies bf16 autocast keeps for the whole autocast block: every weight and bias of a
    matmul (the layers' projections and the output layer; norms and the embedding lookup stay float32)."""
    norms = 2 * arch.hidden
    return 2 * (arch.layers * (layer_parameters(arch) - norms) + arch.vocab * arch.hidden)


def kv_bytes_per_token(arch: Architecture, dtype_bytes: int) -> int:
    """Keys and values of one token in every layer."""
    return 2 * arch.layers * arch.kv_width * dtype_bytes


def layer_saved_bytes(arch: Architecture, autocast: bool) -> int:
    """What one decoder layer keeps for the backward per token, under bf16 autocast or in float32.

    SDPA saves q, k, v, its output and the log-sum-exp; k and v stay grouped. The layer keeps the float32
    residual before each norm, its normalised value, the norm's output (float32), or under autocast a bfloat16
    copy of it per projection that reads it (q, k, v; gate, up), RoPE'd q and k (cast to bfloat16 under
    autocast), v, the attention output, and the MLP's gate, up, silu(gate) and their product.

    >>> layer_saved_bytes(Architecture("qwen2", 10, 4, 1, 2, 1, 2, 8, True, True, False, False, 16), False)
    280
    """
    h, q, kv, i, heads = arch.hidden, arch.q_width, arch.kv_width, arch.intermediate, arch.heads
    if autocast:
        return 2 * 4 * h + 2 * 4 * h + (3 + 2) * 2 * h + 2 * (2 * q) + 2 * (2 * kv) + 4 * 2 * i + 4 * heads
    return 4 * (2 * h + 2 * h + 2 * h + 2 * q + 2 * kv + 4 * i + heads)


def saved_bytes(arch: Architecture, tokens: int, response_tokens: int, autocast: bool, output_layer: bool = True,
                checkpointed: bool = False) -> int:
    """What a training forward keeps for the backward, over `tokens` (rows x padded length) positions of which
    `response_tokens` go through the output layer (`response_logprobs`), under bf16 autocast or in float32:
    each layer's tensors (`layer_saved_bytes`), or with `checkpointed` (`train.activation_checkpointing`) only
    its input, the float32 residual that the checkpoint reruns it from; then the head's.

    >>> arch = Architecture("qwen2", 10, 4, 1, 2, 1, 2, 8, True, True, False, False, 16)
    >>> saved_bytes(arch, tokens=3, response_tokens=2, autocast=False)  # 3*(4*(24+8+4+32+2) + 48+16) + 2*(16+40)
    1144
    >>> saved_bytes(arch, tokens=3, response_tokens=2, autocast=False, checkpointed=True)  # 3*(16 + 48+16) + 112
    352
    """
    layer = 4 * arch.hidden if checkpointed else layer_saved_bytes(arch, autocast)
    head = tokens * (3 * 4 * arch.hidden + 2 * 4 * arch.head_dim)  # the final norm's three, RoPE's float32 cos, sin
    if output_layer:  # the gathered hidden states (a bfloat16 copy under autocast) and float32 logits / T
        head += response_tokens * ((2 if autocast else 4) * arch.hidden + 4 * arch.vocab)
    return tokens * arch.layers * layer + head


def rerun_bytes(arch: Architecture, tokens: int, autocast: bool, output_layer: bool = True) -> int:
    """Peak of a checkpointed backward while it reruns a layer (the last one, the first rerun, when every
    layer's input is still kept), once the logits are gone: the layers' inputs, RoPE's cos and sin, the
    rerun layer's tensors and its MLP's gradients (`MLP_BACKWARD_COPIES`), and a tied output layer's float32
    weight gradient, which waits in autograd's buffer for the embedding's until the end.

    >>> arch = Architecture("qwen2", 10, 4, 1, 2, 1, 2, 8, True, True, False, False, 16)
    >>> rerun_bytes(arch, tokens=3, autocast=False)  # 3*(16 + 16 + 280 + 2*4*8) + 4*10*4
    1288
    """
    kept = tokens * (arch.layers * 4 * arch.hidden + 2 * 4 * arch.head_dim)
    gradients = MLP_BACKWARD_COPIES * (2 if autocast else 4) * arch.intermediate
    layer = tokens * (layer_saved_bytes(arch, autocast) + gradients)
    waiting = 4 * arch.vocab * arch.hidden if output_layer and arch.tied else 0
    return kept + layer + waiting


def training_pass_bytes(arch: Architecture, rows: int, length: int, response: int, autocast: bool,
                        output_layer: bool = True, checkpointed: bool = False) -> int:
    """Peak bytes one forward and backward adds above what was allocated before it, gradients included
    (they exist from the first micro-batch of a step on); autocast's weight copies are not included
    (`autocast_copy_bytes`).

    The peak is at the top of the backward (all saved tensors, and either the logits' gradients or the
    output layer's weight gradient: float32, plus its bfloat16 form under autocast, while the logits are
    freed) or at its end, where the embedding's dense gradient is made (`TIED_EMBEDDING_GRADIENTS`); with
    `checkpointed` (`train.activation_checkpointing`), the layers keep only their inputs and the peak may
    instead come while the last layer reruns (`rerun_bytes`). `output_layer` False is a critic: a value
    head on every position, no logits.

    Args:
        rows: sequences in the micro-batch.
        length: padded length of each (prompt + response).
        response: response tokens per row (the positions that go through the output layer).
        checkpointed: each decoder layer is rerun in the backward instead of keeping its tensors.
    """
    tokens, weight = rows * length, 4 * arch.vocab * arch.hidden
    saved = saved_bytes(arch, tokens, rows * response, autocast, output_layer, checkpointed)
    rerun = rerun_bytes(arch, tokens, autocast, output_layer) if checkpointed else 0
    if not output_layer:
        return max(saved, rerun, weight)
    logits = 4 * rows * response * arch.vocab
    top = saved + max(LOGIT_BACKWARD_COPIES * logits, weight * 3 // 2 - logits if autocast else weight)
    end = weight * TIED_EMBEDDING_GRADIENTS[autocast] if arch.tied else weight
    return max(top, rerun, end)


def inference_pass_bytes(arch: Architecture, tokens: int, dtype_bytes: int) -> int:
    """Peak of a forward without grad over `tokens` positions: inside the MLP, silu(gate), up and their
    product, beside the residual, the norm's output and the attention's."""
    return tokens * dtype_bytes * (3 * arch.intermediate + 4 * arch.hidden)


def scoring_bytes(arch: Architecture, tokens: int, logits: int, dtype_bytes: int) -> int:
    """Peak of teacher-forced scoring (`response_logprobs` without grad) of `tokens` positions of which
    `logits` (rows x T x V) reach the output layer: the decoder's pass, then the logits'."""
    return max(inference_pass_bytes(arch, tokens, dtype_bytes), SCORING_BYTES_PER_LOGIT * logits)


def sampling_bytes(arch: Architecture, cached_tokens: int, rows: int, dtype_bytes: int) -> int:
    """Peak of one batch of the transformers engine's sampler: the keys and values of `cached_tokens`, and
    the larger of the prompts' prefill and one decoding step of `rows` rows (its logits and
    `SAMPLING_BYTES_PER_LOGIT`)."""
    decode = rows * arch.vocab * (dtype_bytes + SAMPLING_BYTES_PER_LOGIT)
    return cached_tokens * kv_bytes_per_token(arch, dtype_bytes) + max(
        inference_pass_bytes(arch, cached_tokens, dtype_bytes), decode)
