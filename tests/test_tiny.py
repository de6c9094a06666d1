"""Tiny tokenizers and models: exact round trips, seeded init, checkpoints the engine loads."""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from spo.policy import make_engine
from spo.policy.tiny import (
    SPECIAL_TOKENS,
    build_bpe_tokenizer,
    build_char_tokenizer,
    build_tiny_model,
    create_tiny_checkpoint,
)

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.\n",
    "How many clips did Natalia sell altogether in April and May? 48/2 = <<48/2=24>>24 clips.\n#### 72",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.\t(ok) a . b , c 's",
]
ALPHABET = sorted(set("".join(CORPUS)))



@pytest.fixture(scope="module")
def char_tokenizer():
    return build_char_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return build_bpe_tokenizer(CORPUS * 5, vocab_size=300)


def test_char_tokenizer_ids_and_specials(char_tokenizer):
    assert [char_tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (char_tokenizer.pad_token_id, char_tokenizer.bos_token_id, char_tokenizer.eos_token_id) == (
        0,
        1,
        2,
    )
    assert len(char_tokenizer) == 4 + len(ALPHABET)
    assert char_tokenizer.encode("a b") == [4 + ALPHABET.index(c) for c in "a b"]  # no special tokens added
    assert char_tokenizer.encode("~") == [3]  # unseen character -> <unk>


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
@example("a\n\n\tb  ")  # runs of whitespace, newlines included, are one id per character
def test_char_tokenizer_round_trip_is_exact(text):
    tokenizer = build_char_tokenizer(CORPUS)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text  # no inserted or cleaned-up spaces
    if not any(
        special in text for special in SPECIAL_TOKENS
    ):  # "<eos>" written out encodes to the one special id
        assert len(ids) == len(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trip_is_exact_for_any_string(text):
    tokenizer = build_bpe_tokenizer(CORPUS, vocab_size=300)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bpe_learns_merges(bpe_tokenizer):
    assert 260 < len(bpe_tokenizer) <= 300
    assert len(bpe_tokenizer.encode(CORPUS[0])) < len(CORPUS[0]) / 1.5


def test_tiny_model_is_seeded_and_leaves_the_global_rng_alone(char_tokenizer):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_tiny_model(
        char_tokenizer, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=1
    )
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state must not change the weights
    b = build_tiny_model(
        char_tokenizer, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=1
    )
    c = build_tiny_model(
        char_tokenizer, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=2
    )
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert pa.dim() == 1 or not torch.equal(pa, pc), name
    assert a.lm_head.weight.data_ptr() != a.model.embed_tokens.weight.data_ptr()  # untied
    assert abs(float(a.lm_head.weight.detach().std()) - 0.02) < 0.002


def test_tiny_model_sizes(char_tokenizer):
    with pytest.raises(ValueError, match="hidden_size 30 is not a multiple of num_heads 4"):
        build_tiny_model(char_tokenizer, hidden_size=30)
    model = build_tiny_model(char_tokenizer)  # defaults: hidden 128, 4 layers, MLP 512
    sizes = model.config.hidden_size, model.config.num_hidden_layers, model.config.intermediate_size
    assert sizes == (128, 4, 512)
    config = model.config
    assert config.vocab_size == len(char_tokenizer) and config.eos_token_id == 2


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_checkpoint_loads_in_the_engine(tmp_path, kind):
    path = create_tiny_checkpoint(
        tmp_path / kind,
        CORPUS,
        tokenizer_kind=kind,
        bpe_vocab_size=300,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
    )
    engine = make_engine("transformers", path, device="cpu")
    reference = build_tiny_model(
        build_char_tokenizer(CORPUS) if kind == "char" else build_bpe_tokenizer(CORPUS, 300),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
    )
    for (name, loaded), built in zip(engine.model.named_parameters(), reference.parameters()):
        assert torch.equal(loaded, built), name
    reloaded = AutoTokenizer.from_pretrained(path)
    assert reloaded.decode(reloaded.encode(CORPUS[1])) == CORPUS[1]
    assert engine.tokenizer.eos_token_id == 2


def test_unknown_tokenizer_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer_kind 'word'; choose one of \\['bpe', 'char'\\]"):
        create_tiny_checkpoint(tmp_path, CORPUS, tokenizer_kind="word")
