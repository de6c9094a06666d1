"""Tiny tokenizers and Llama models built locally, for tests, demos and CPU benchmarks.

Nothing here downloads: tokenizers are trained from the texts they are handed and models are
randomly initialised from a seeded generator. `create_tiny_checkpoint` writes both to a directory
in Hugging Face format, so `make_engine("transformers", path)` loads it like any checkpoint. torch, tokenizers
and transformers are imported by the functions that build, so the config checks `TOKENIZER_KINDS` without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Special tokens of every tiny tokenizer, ids 0-3 in this order."""


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    # clean_up_tokenization_spaces would turn "a ." into "a." on decode and break the round trip.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def char_vocabulary(texts: Iterable[str]) -> tuple[str, ...]:
    """The tokens of the character tokenizer over `texts`, in id order: the special tokens, then every character
    seen, sorted (the memory plan counts them without building the tokenizer).

    >>> char_vocabulary(["ab a\\n\\n"])[4:]
    ('\\n', ' ', 'a', 'b')
    """
    return SPECIAL_TOKENS + tuple(sorted(set().union(*(set(text) for text in texts))))


def build_char_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Return a character-level tokenizer over every character seen in `texts`.

    Ids 0-3 are `<pad> <bos> <eos> <unk>`, then the characters in sorted order. Encoding adds no
    special tokens; decoding joins characters without spaces, so decode(encode(s)) == s for any s
    made of seen characters.

    Args:
        texts: the corpus; every character of it gets an id.

    >>> tok = build_char_tokenizer(["ab a\\n\\n"])  # ids: 4 "\\n", 5 " ", 6 "a", 7 "b"
    >>> tok.encode("ab a\\n\\n"), tok.decode(tok.encode("ab a\\n\\n")) == "ab a\\n\\n"
    ([6, 7, 5, 6, 4, 4], True)
    >>> len(tok), tok.eos_token_id, tok.pad_token_id
    (8, 2, 0)
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(char_vocabulary(texts))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Not Regex("."): it skips newlines, and the unmatched gap "\n\n" then becomes one <unk> piece.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Return a byte-level BPE tokenizer trained on `texts` (exact round trip for any string).

    Args:
        texts: the training corpus.
        vocab_size: size of the vocabulary, the 4 special tokens and 256 byte symbols included.

    >>> tok = build_bpe_tokenizer(["the cat sat on the mat"] * 20, vocab_size=270)
    >>> tok.decode(tok.encode("the hat")) == "the hat", len(tok) <= 270, tok.eos_token_id
    (True, True, 2)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return _wrap(tokenizer)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Return a randomly initialised Llama with untied embeddings, sized for a CPU.

    Weights are drawn from a `torch.Generator` seeded with `seed` (matrices N(0, 0.02), norms 1),
    so the same arguments give bit-identical models whatever the global RNG state is.

    Args:
        tokenizer: gives the vocabulary size and the pad/bos/eos ids.
        hidden_size: model width; must be a multiple of `num_heads`.
        num_layers: decoder layers.
        num_heads: attention heads (no grouped-query attention).
        intermediate_size: MLP width.
        max_position_embeddings: the context length the engine enforces.
        seed: seed of the initialisation.

    >>> tok = build_char_tokenizer(["abc"])
    >>> model = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    >>> # embed + lm_head 2*7*16, q/k/v/o 4*16*16, mlp 3*16*32, norms 3*16: 224 + 1024 + 1536 + 48
    >>> sum(p.numel() for p in model.parameters()), model.config.tie_word_embeddings
    (2832, False)
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # The constructor draws its own init from the global RNG; fork it so callers' state is untouched,
    # then overwrite every parameter from our own generator.
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() == 1:
                parameter.fill_(1.0)  # RMSNorm weights
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * config.initializer_range)
    return model.eval()


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""The chat template of tiny models built for `prompt.chat_template = true`: role markers in plain text."""



TOKENIZER_KINDS: dict[str, Callable[[Iterable[str], int], PreTrainedTokenizerFast]] = {
    "char": lambda texts, vocab_size: build_char_tokenizer(texts),
    "bpe": lambda texts, vocab_size: build_bpe_tokenizer(texts, vocab_size=vocab_size),
}
"""`model.tiny.tokenizer`: one token per character of the task's text, or BPE trained on it (of
`model.tiny.bpe_vocab_size`)."""

def create_tiny_checkpoint(
    path: str | Path,
    texts: Iterable[str],
    tokenizer_kind: str = "char",
    bpe_vocab_size: int = 512,
    chat_template: str | None = None,
    **model_options,
) -> Path:
    """Build a tiny tokenizer and model and save both to `path` in Hugging Face format.

    Args:
        path: output directory (created if missing).
        texts: corpus for the tokenizer.
        tokenizer_kind: "char" or "bpe".
        bpe_vocab_size: vocabulary size of the BPE tokenizer (ignored for "char").
        chat_template: a Jinja chat template to give the tokenizer (`TINY_CHAT_TEMPLATE`), or None.
        **model_options: keyword arguments of `build_tiny_model`.

    Returns:
        The checkpoint directory.
    """
    if tokenizer_kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer_kind {tokenizer_kind!r}; choose one of {sorted(TOKENIZER_KINDS)}")
    tokenizer = TOKENIZER_KINDS[tokenizer_kind](texts, bpe_vocab_size)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    model = build_tiny_model(tokenizer, **model_options)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
