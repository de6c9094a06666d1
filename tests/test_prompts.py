"""Prompts through a chat template (`prompt.chat_template`): the template's token ids are the prompt all the
way through (prompts artifact, warm start, evaluation), with the task's user message and the system message.

Real parts: a tiny byte-level BPE tokenizer with a chat template (`TINY_CHAT_TEMPLATE`), real GSM8K and
MATH-500 rows, and a real Prefect flow run.
"""

import pytest

from spo.config import PromptConfig
from spo.policy.tiny import TINY_CHAT_TEMPLATE, build_bpe_tokenizer
from spo.tasks import Gsm8kTask, Math500Task
from stages.runtime.artifacts import read_table
from stages.runtime.resources import load_tokenizer, prompt_text_and_ids
from stages.runtime.run_dir import create_run, load_preset
from tests.helpers import TINY_OVERRIDES


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_bpe_tokenizer(["Solve the problem step by step. #### 42\n<|user|> <|assistant|>"] * 20, vocab_size=300)
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def test_chat_prompts_are_the_templates_ids_with_the_tasks_user_message(shared_data, tokenizer):
    gsm8k = Gsm8kTask(path=shared_data / "gsm8k")
    example = gsm8k.examples("test")[0]
    chat = PromptConfig(chat_template=True, system="You are a careful solver.")
    text, ids = prompt_text_and_ids(chat, gsm8k, tokenizer, example)
    assert text == (f"<|system|>\nYou are a careful solver.\n<|user|>\n{example.question}\n\nSolve the problem "
                    f"step by step. End your response with a line of the form '#### ANSWER', where ANSWER is just "
                    f"the final number.\n<|assistant|>\n")
    messages = [{"role": "system", "content": chat.system},
                {"role": "user", "content": gsm8k.user_message(example)}]
    assert ids == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    assert tokenizer.decode(ids) == text
    plain_text, plain_ids = prompt_text_and_ids(PromptConfig(), gsm8k, tokenizer, example)
    assert plain_text == f"[MATH_TASK] Problem:\n{example.question}\n\nSolution:"
    assert plain_ids == tokenizer(plain_text, add_special_tokens=False)["input_ids"]
    math = Math500Task(path=shared_data / "math500")
    problem = math.examples("test")[0]
    text, _ = prompt_text_and_ids(PromptConfig(chat_template=True), math, tokenizer, problem)
    assert text.startswith("<|user|>\nSolve the following math problem") and "\uff5c" not in text  # no R1 markup


def test_a_chat_template_run_goes_through_the_flow(prefect_harness, tmp_path):
    from flows.spo_run import spo_run

    cfg = load_preset("tiny").with_overrides(
        [*TINY_OVERRIDES, "model.tiny.tokenizer=bpe", "model.tiny.bpe_vocab_size=300", "prompt.chat_template=true",
         "prompt.system=Answer with 1 or 0."])
    run = create_run(tmp_path / "run", cfg)
    assert spo_run(str(run.root), return_state=True).is_completed()
    tokenizer = load_tokenizer(run.tokenizer())
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE
    for row in read_table(run.artifact(0, "prompts")).to_pylist():
        assert row["prompt_text"].startswith("<|system|>\nAnswer with 1 or 0.\n<|user|>\n")
        assert row["prompt_text"].endswith("\n<|assistant|>\n")
        assert tokenizer.decode(row["prompt_ids"]) == row["prompt_text"]
    rollouts = read_table(run.artifact(0, "rollouts")).to_pylist()
    prompts = {r["question_id"]: r["prompt_ids"] for r in read_table(run.artifact(0, "prompts")).to_pylist()}
    assert all(r["prompt_ids"] == prompts[r["question_id"]] for r in rollouts)


def test_a_chat_template_needs_a_tokenizer_that_has_one(tmp_path):
    from spo.config import ConfigError
    from spo.policy.tiny import create_tiny_checkpoint
    from stages.runtime.preflight import preflight

    folder = create_tiny_checkpoint(tmp_path / "plain", ["1+1=2"], tokenizer_kind="bpe", bpe_vocab_size=270,
                                    hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8)
    cfg = load_preset("tiny").with_overrides([f"model.path={folder}", "prompt.chat_template=true"])
    with pytest.raises(ConfigError, match="has no chat template"):
        preflight(cfg)
    with pytest.raises(ConfigError, match="model.tiny.tokenizer = 'char'"):
        load_preset("tiny").with_overrides(["prompt.chat_template=true"])
