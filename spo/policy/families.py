"""The model families of the GPU presets as published: what each preset's model is made of, as plain values.

A family (`FAMILIES`, found from a preset's `model.path` by `family_of`) holds the Hugging Face architecture
config, the special tokens at their ids, bos / eos / pad, the chat template and the stop rule;
docs/design.md#rehearsal-checkpoints lists every value with the public file it comes from. Nothing here
imports torch, tokenizers or transformers: the memory plan counts a family's architecture from `config_json`,
and spo/policy/rehearsal.py builds the family's tokenizer and a random-weight checkpoint from these values.

>>> family_of("Qwen/Qwen2.5-0.5B-Instruct"), family_of("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
('qwen2.5-instruct', 'r1-distill-qwen')
"""

import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple


class SpecialToken(NamedTuple):
    """An added token of a tokenizer, at its id in the published tokenizer.json."""

    id: int
    text: str
    special: bool
    """tokenizer.json's flag: True tokens are dropped by `decode(skip_special_tokens=True)`; either kind is
    matched whole in text, never split by the BPE."""


QWEN25_SPECIAL_TOKENS = tuple(SpecialToken(*token) for token in (
    (151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True), (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True), (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True), (151653, "<|vision_end|>", True), (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True), (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False), (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False), (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False), (151663, "<|repo_name|>", False), (151664, "<|file_sep|>", False),
))
"""Qwen2.5's 22 added tokens after the 151,643 BPE ranks (Qwen2.5-0.5B-Instruct tokenizer_config.json)."""

R1_DISTILL_SPECIAL_TOKENS = tuple(SpecialToken(*token) for token in (
    (151643, "<\uff5cend\u2581of\u2581sentence\uff5c>", True), (151644, "<\uff5cUser\uff5c>", False),
    (151645, "<\uff5cAssistant\uff5c>", False), (151646, "<\uff5cbegin\u2581of\u2581sentence\uff5c>", True),
    (151647, "<|EOT|>", False), (151648, "<think>", False), (151649, "</think>", False),
)) + QWEN25_SPECIAL_TOKENS[7:]
"""DeepSeek-R1-Distill-Qwen's added tokens: DeepSeek's markers (fullwidth bars U+FF5C, U+2581 for the spaces)
in place of Qwen's first seven, then Qwen2.5's from `<|quad_start|>` 151650 on (its tokenizer_config.json)."""

QWEN25_05B = MappingProxyType({
    "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
    "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21, "attention_dropout": 0.0,
    "initializer_range": 0.02,
})
"""Qwen2.5-0.5B-Instruct's architecture (config.json, token ids aside). The base Qwen2.5-0.5B differs only in
max_window_layers (24), which does nothing with the sliding window off. vocab_size is the embedding's rows:
151,936, past the 151,665 ids that the tokenizer uses."""

R1_DISTILL_QWEN_15B = MappingProxyType({
    "vocab_size": 151936, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "intermediate_size": 8960, "max_position_embeddings": 131072,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu",
    "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 21, "attention_dropout": 0.0,
    "initializer_range": 0.02,
})
"""DeepSeek-R1-Distill-Qwen-1.5B's architecture (config.json): Qwen2.5-Math-1.5B's shape, untied, RoPE theta
1e4."""

RHOMATH_1B = MappingProxyType({
    "vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "intermediate_size": 5632, "max_position_embeddings": 2048,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
    "attention_bias": False, "initializer_range": 0.02,
})
"""RhoMath-1.1B's architecture: TinyLlama-1.1B's config.json (Rho-1 continues TinyLlama's pretraining) with
the Llama-2 SentencePiece vocabulary of 32,000 pieces."""

ARCHITECTURES = {"llama": "LlamaConfig", "qwen2": "Qwen2Config"}
"""`Family.architecture` (config.json's model_type) -> its transformers config class, by name (LlamaForCausalLM,
Qwen2ForCausalLM); `spo.policy.rehearsal.rehearsal_config` imports it."""

_ROLES_CHECK = (
    "{%- for message in messages %}{%- if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{- raise_exception('this template renders system, user and assistant messages, got '"
    " + message['role']) }}"
    "{%- endif %}{%- endfor %}"
)

QWEN25_CHAT_TEMPLATE = _ROLES_CHECK + (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Our template with Qwen2.5-Instruct's layout for system, user and assistant messages (no tools): a system
turn first, Qwen's default system prompt when none is given, `<|im_start|>assistant\\n` as the generation
prompt."""

R1_DISTILL_CHAT_TEMPLATE = _ROLES_CHECK + (
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- set ns.system = message['content'] %}{%- endif %}{%- endfor %}"
    "{{- bos_token + ns.system }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '<\uff5cUser\uff5c>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<\uff5cAssistant\uff5c>' + message['content'].split('</think>')[-1]"
    " + '<\uff5cend\u2581of\u2581sentence\uff5c>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<\uff5cAssistant\uff5c><think>\\n' }}{%- endif %}"
)
"""Our template with DeepSeek-R1-Distill's layout (no tools): bos, the last system message as plain text,
`<｜User｜>` before each user message, an assistant message without its reasoning (what follows the last
`</think>`) and closed by eos, and `<｜Assistant｜><think>\\n` as the generation prompt."""


@dataclass(frozen=True)
class Family:
    """What a GPU preset's model is made of, as published (docs/design.md#rehearsal-checkpoints)."""

    name: str
    """The `FAMILIES` key."""
    model_paths: tuple[str, ...]
    """Hugging Face ids of this family's models in the presets (`family_of`, case-insensitive)."""
    architecture: str
    """An `ARCHITECTURES` key: the transformers classes of the model."""
    config: MappingProxyType
    """config.json's architecture values at full depth, bos_token_id and eos_token_id included."""
    special_tokens: tuple[SpecialToken, ...]
    """The added tokens after the BPE ranks, in id order from `bpe_ranks`."""
    bos_token: str | None
    """The tokenizer's bos (None: none)."""
    eos_token: str
    """The tokenizer's eos: the one token after which this project's samplers stop
    (docs/design.md#stop-token)."""
    pad_token: str
    """The tokenizer's pad."""
    add_bos_token: bool
    """Whether encoding with special tokens puts bos first (the tokenizer's post-processor)."""
    model_max_length: int
    """tokenizer_config.json's model_max_length."""
    generation_bos_id: int | None
    """generation_config.json's bos_token_id."""
    generation_eos_ids: tuple[int, ...]
    """generation_config.json's eos_token_id: what Hugging Face `generate` stops on."""
    chat_template: str | None
    """A Jinja chat template with the published layout (written here), or None for a family used without
    one."""
    stop_rule: str
    """When a response ends, in words."""
    substitute: str = ""
    """What the rehearsal does not reproduce of the real checkpoint; empty when it reproduces all but the
    weights."""
    bpe_ranks: int = 151643
    """How many of the Qwen2 BPE's ranks the tokenizer keeps, ids 0 to bpe_ranks - 1 (all 151,643, or the
    lowest ranks for a stand-in vocabulary of the published size: a byte-level BPE cut at any rank is whole,
    since every token merges two of lower rank)."""


QWEN25_INSTRUCT = Family(
    name="qwen2.5-instruct",
    model_paths=("Qwen/Qwen2.5-0.5B-Instruct",),
    architecture="qwen2",
    config=MappingProxyType({**QWEN25_05B, "bos_token_id": 151643, "eos_token_id": 151645}),
    special_tokens=QWEN25_SPECIAL_TOKENS,
    bos_token=None,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    add_bos_token=False,
    model_max_length=131072,
    generation_bos_id=151643,
    generation_eos_ids=(151645, 151643),
    chat_template=QWEN25_CHAT_TEMPLATE,
    stop_rule="stop after <|im_end|> (151645), the end of the assistant turn; generate also stops on "
              "<|endoftext|>",
)
"""Qwen2.5-0.5B-Instruct (`gsm8k-qwen05b-instruct-chain`, `prompt.chat_template = true`)."""

R1_DISTILL_QWEN = Family(
    name="r1-distill-qwen",
    model_paths=("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",),
    architecture="qwen2",
    config=MappingProxyType({**R1_DISTILL_QWEN_15B, "bos_token_id": 151643, "eos_token_id": 151643}),
    special_tokens=R1_DISTILL_SPECIAL_TOKENS,
    bos_token="<\uff5cbegin\u2581of\u2581sentence\uff5c>",
    eos_token="<\uff5cend\u2581of\u2581sentence\uff5c>",
    pad_token="<\uff5cend\u2581of\u2581sentence\uff5c>",
    add_bos_token=True,
    model_max_length=16384,
    generation_bos_id=151646,
    generation_eos_ids=(151643,),
    chat_template=R1_DISTILL_CHAT_TEMPLATE,
    stop_rule="stop after <\uff5cend\u2581of\u2581sentence\uff5c> (151643); </think> (151649) closes the "
              "reasoning but not the response",
)
"""DeepSeek-R1-Distill-Qwen-1.5B (`math500-r1distill-tree`, whose task prompt spells the R1 markup itself)."""

RHOMATH = Family(
    name="rhomath",
    model_paths=("realtreetune/rho-1b-sft-GSM8K", "microsoft/rho-math-1b-v0.1"),
    architecture="llama",
    config=MappingProxyType({**RHOMATH_1B, "bos_token_id": 31999, "eos_token_id": 31999}),
    special_tokens=(SpecialToken(31999, "<|endoftext|>", True),),
    bos_token=None,
    eos_token="<|endoftext|>",
    pad_token="<|endoftext|>",
    add_bos_token=False,
    model_max_length=2048,
    generation_bos_id=None,
    generation_eos_ids=(31999,),
    chat_template=None,
    stop_rule="stop after the eos; the real one is </s> (2), rehearsed as <|endoftext|> (31999)",
    substitute="the Llama-2 SentencePiece vocabulary (32,000 pieces; <unk> 0, <s> 1 the bos, </s> 2 the "
               "eos) ships in no installable package: rehearsed with the Qwen2 BPE's lowest 31,999 ranks and "
               "<|endoftext|> as eos and pad at id 31,999, so the vocabulary has the real 32,000 rows",
    bpe_ranks=31999,
)
"""RhoMath-1.1B SFT (the `gsm8k-rho1b-*` presets). Its architecture is real, vocabulary size included; the
vocabulary itself is a stand-in (`substitute`): token ids and lengths differ from the real model's, the
stages' plumbing does not."""

FAMILIES = {family.name: family for family in (QWEN25_INSTRUCT, R1_DISTILL_QWEN, RHOMATH)}
"""Model families of the GPU presets, by name."""


def family_of(model_path: str) -> str:
    """The `FAMILIES` name of a preset's `model.path` (a Hugging Face id, case-insensitive).

    >>> family_of("realtreetune/rho-1b-sft-GSM8K")
    'rhomath'
    """
    for family in FAMILIES.values():
        if model_path.lower() in (path.lower() for path in family.model_paths):
            return family.name
    known = sorted(path for family in FAMILIES.values() for path in family.model_paths)
    raise ValueError(
        f"no rehearsal family for model path {model_path!r}; known: {known} (spo/policy/rehearsal.py)"
    )


def family_spec(name: str) -> Family:
    """The family called `name`; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_fingerprint(name: str) -> str:
    """A hash of everything the family says (architecture, tokens, template, vocabulary cut): a rehearsal
    checkpoint built from other values is stale (stages/runtime/rehearsal.py)."""
    return hashlib.sha256(repr(family_spec(name)).encode()).hexdigest()[:16]


def config_json(family: str, layers: int | None = None) -> dict[str, Any]:
    """The family's config.json values, model_type first, with `layers` decoder layers (None: the published
    depth).

    >>> values = config_json("qwen2.5-instruct", 2)
    >>> values["model_type"], values["num_hidden_layers"], values["hidden_size"]
    ('qwen2', 2, 896)
    """
    spec = family_spec(family)
    values = {"model_type": spec.architecture, **spec.config}
    if layers is not None:
        if not 1 <= layers <= values["num_hidden_layers"]:
            raise ValueError(
                f"layers = {layers}: expected 1 to {values['num_hidden_layers']} for {family}, or None"
            )
        values["num_hidden_layers"] = layers
    return values
