"""Tests for spo/tasks: registry, rewards, arith generator, GSM8K and MATH-500 loading on the real data."""

import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spo.tasks
from spo.tasks import TASKS, ArithTask, Example, Gsm8kTask, Math500Task, Task, make_task, register_task
from spo.tasks.arith import chain_solution

# ---------------------------------------------------------------- registry


def test_make_task_unknown_name_lists_the_choices() -> None:
    # conftest registers the test-only `coin` task, so match the built-in names inside the list
    with pytest.raises(
        ValueError, match=r"unknown task 'mnist'; choose one of \['arith', .*'gsm8k', 'math500'\]"
    ):
        make_task("mnist")


def test_register_task_adds_a_user_task_and_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spo.tasks, "TASKS", dict(TASKS))  # keep the real registry untouched

    def tiny_arith(**options) -> Task:
        return ArithTask(n_train=2, n_test=2, **options)

    register_task("tiny", tiny_arith)
    assert isinstance(make_task("tiny", seed=3), ArithTask)
    with pytest.raises(ValueError, match="task 'arith' is already registered"):
        register_task("arith", tiny_arith)


# ---------------------------------------------------------------- reward rules (docs/design.md#rewards)

EXAMPLE = Example(
    id="arith/test/0", question="27+82+18", answer="127", solution="27+82=109; 109+18=127. #### 127"
)


@pytest.mark.parametrize(
    ("response", "finished", "expected"),
    [
        (" 27+82=109; 109+18=127. #### 127", True, 1.0),
        (" 27+82=109; 109+18=128. #### 128", True, 0.0),
        (" 27+82=109; 109+18=127. #### 127", False, -0.5),  # cut by the length limit
        (" #### 127 #### 127", True, -2.0),  # two answer markers, even if both are right
        (" 27+82=109; 109+18=127.", True, -0.5),  # no final answer
        (" #### 12x", True, 0.0),  # an answer that is not an integer is wrong
    ],
)
def test_reward_rules(response: str, finished: bool, expected: float) -> None:
    task = ArithTask(n_train=1, n_test=1, unfinished_penalty=-0.5)
    assert task.reward(response, EXAMPLE, finished=finished) == expected


def test_default_penalties() -> None:
    task = ArithTask(n_train=1, n_test=1)
    assert task.reward("no answer", EXAMPLE) == 0.0
    assert task.reward("#### 1 #### 127", EXAMPLE) == -2.0


# ---------------------------------------------------------------- arith


def test_arith_prompt_and_target_format() -> None:
    task = ArithTask(n_train=1, n_test=1)
    assert task.prompt(EXAMPLE) == "Q: 27+82+18= A:"
    assert task.target(EXAMPLE) == " 27+82=109; 109+18=127. #### 127"
    assert chain_solution([27, 82, 18], "++") == EXAMPLE.solution


def test_arith_chain_evaluates_left_to_right() -> None:
    # 5*3=15; 15-20=-5; -5*2=-10 (left to right, not by precedence)
    assert chain_solution([5, 3, 20, 2], "*-*") == "5*3=15; 15-20=-5; -5*2=-10. #### -10"


def test_arith_splits_are_deterministic_disjoint_and_sized() -> None:
    task = ArithTask(n_train=2000, n_test=300, seed=7)
    train, test = task.examples("train"), task.examples("test")
    assert (len(train), len(test)) == (2000, 300)
    assert not {e.question for e in train} & {e.question for e in test}
    assert len({e.question for e in train}) == 2000
    assert [e.id for e in test[:2]] == ["arith/test/0", "arith/test/1"]
    assert ArithTask(n_train=2000, n_test=300, seed=7).examples("test") == test
    assert (
        ArithTask(n_train=50, n_test=300, seed=7).examples("test") == test
    )  # test does not move with n_train
    assert ArithTask(n_train=2000, n_test=300, seed=8).examples("test") != test


@pytest.mark.parametrize("operators", ["+", "+-*"])
def test_arith_targets_earn_full_reward_and_fit_the_alphabet(operators: str) -> None:
    task = ArithTask(n_operands=4, digits=2, operators=operators, n_train=200, n_test=100)
    alphabet = set(task.alphabet())
    for example in [*task.examples("test"), *task.examples("train")]:
        assert task.reward(task.target(example), example) == 1.0
        assert set(task.prompt(example) + task.target(example)) <= alphabet
    assert all(text.startswith("Q: ") for text in task.corpus("test"))


def test_arith_operands_have_the_requested_digits() -> None:
    task = ArithTask(n_operands=3, digits=3, n_train=50, n_test=10)
    operands = [int(x) for e in task.examples("train") for x in e.question.split("+")]
    assert min(operands) >= 100 and max(operands) <= 999


def test_arith_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="operators must be distinct characters"):
        ArithTask(operators="+/")
    with pytest.raises(ValueError, match="at most the 100 distinct questions"):
        ArithTask(n_operands=2, digits=1, n_train=100, n_test=1)  # 10 * 10 = 100 questions
    with pytest.raises(ValueError, match="n_operands >= 2"):
        ArithTask(n_operands=1)
    with pytest.raises(ValueError, match=r"unknown split 'dev'; choose one of \['test', 'train'\]"):
        ArithTask(n_train=1, n_test=1).examples("dev")


# ---------------------------------------------------------------- GSM8K on the real data


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> Gsm8kTask:
    return Gsm8kTask(path=shared_data / "gsm8k")


def test_every_gsm8k_reference_solution_earns_full_reward(gsm8k: Gsm8kTask) -> None:
    for split, size in (("train", 7473), ("test", 1319)):
        examples = gsm8k.examples(split)
        assert len(examples) == size
        assert len({e.id for e in examples}) == size
        wrong = [e.id for e in examples if gsm8k.reward(gsm8k.target(e), e) != 1.0]
        assert wrong == []  # measured: 7473 / 7473 train and 1319 / 1319 test


def test_gsm8k_prompt_target_and_gold(gsm8k: Gsm8kTask) -> None:
    first = gsm8k.examples("train")[0]
    assert first.id == "gsm8k/train/0" and first.answer == "72"
    assert gsm8k.prompt(first) == f"[MATH_TASK] Problem:\n{first.question}\n\nSolution:"
    # calculator notes <<48/2=24>> are removed from the target, kept in the solution as in the data
    assert gsm8k.target(first) == (" Natalia sold 48/2 = 24 clips in May.\n"
                                   "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")  # fmt: skip
    assert "<<48/2=24>>" in first.solution


def test_gsm8k_grader_agrees_with_openai_labels_on_model_solutions(
    gsm8k: Gsm8kTask, shared_data: Path
) -> None:
    # These solutions end "A: N" instead of "#### N": a test-only rewrite of that last line, then the real grader.
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "example_model_solutions.jsonl").open()]
    agree = total = 0
    for row, example in zip(rows, gsm8k.examples("test"), strict=True):
        assert row["question"] == example.question
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            lines = row[model]["solution"].rstrip().split("\n")
            if lines[-1].startswith("A:"):
                lines[-1] = "#### " + lines[-1][2:].strip()
            agree += gsm8k.is_correct("\n".join(lines), example) == row[model]["is_correct"]
            total += 1
    assert total == 5276
    assert agree / total >= 0.995  # measured: 5276 / 5276 = 100% agreement


# ---------------------------------------------------------------- MATH-500 on the real data


def test_every_math500_target_earns_full_reward(shared_data: Path) -> None:
    task = Math500Task(path=shared_data / "math500")
    examples = task.examples("test")
    assert len(examples) == 500 and examples[0].id == "math500/test/0"
    assert [e.id for e in examples if task.reward(task.target(e), e) != 1.0] == []
    prompt = task.prompt(examples[0])
    assert prompt.startswith("<\uff5cbegin\u2581of\u2581sentence\uff5c><\uff5cUser\uff5c>Solve the following")
    assert prompt.endswith(examples[0].question + "<\uff5cAssistant\uff5c><think>\n")


def test_math500_train_split_needs_a_file_of_the_user(shared_data: Path) -> None:
    with pytest.raises(ValueError, match=r"only a 'test' split; for 'train' pass path="):
        Math500Task().examples("train")
    with pytest.raises(
        FileNotFoundError, match=r"math500/train.jsonl: no such file .*; MATH-500 has only a 'test'"
    ):
        Math500Task(path=shared_data / "math500").examples("train")


def test_hub_branch_without_datasets_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails, installed or not
    with pytest.raises(ImportError, match="needs the `datasets` package"):
        Gsm8kTask().examples("test")


def test_math500_ids_from_unique_id_and_a_mapping_path(tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    row = {"problem": "1+1?", "solution": "$\\boxed{2}$", "answer": "2", "unique_id": "test/algebra/1.json"}
    file.write_text(json.dumps(row) + "\n\n")  # a blank line is skipped
    task = Math500Task(path={"train": file}, prompt_template="Problem: {question}\nAnswer:")
    (example,) = task.examples("train")
    assert example.id == "math500/train/test/algebra/1.json"
    assert task.prompt(example) == "Problem: 1+1?\nAnswer:"
    assert task.reward("so \\boxed{2.0}", example) == 1.0
    with pytest.raises(ValueError, match=r"no file for split 'test' in path mapping \(has \['train'\]\)"):
        task.examples("test")


# ---------------------------------------------------------------- bad input names file, line and field


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'test.jsonl'}: no such file"):
        Gsm8kTask(path=tmp_path).examples("test")


def test_row_without_the_answer_field(tmp_path: Path) -> None:
    file = tmp_path / "test.jsonl"
    file.write_text('{"question": "q1", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=rf"{file}:2: missing field 'answer'"):
        Gsm8kTask(path=file).examples("test")


def test_non_utf8_line(tmp_path: Path) -> None:
    file = tmp_path / "test.jsonl"
    file.write_bytes(b'{"problem": "p", "solution": "s", "answer": "1"}\n{"problem": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"{file}:2: not valid UTF-8"):
        Math500Task(path=tmp_path).examples("test")


def test_gsm8k_answer_without_final_line(tmp_path: Path) -> None:
    file = tmp_path / "train.jsonl"
    file.write_text('{"question": "q", "answer": "just 5"}\n')
    with pytest.raises(ValueError, match=rf"{file}:1: field 'answer' has no '#### N' final line"):
        Gsm8kTask(path=tmp_path).examples("train")


def test_field_of_the_wrong_type_and_bad_json(tmp_path: Path) -> None:
    file = tmp_path / "test.jsonl"
    file.write_text('{"problem": "p", "solution": "s", "answer": 5}\n')
    with pytest.raises(ValueError, match=rf"{file}:1: field 'answer' is int, expected a string"):
        Math500Task(path=file).examples("test")
    file.write_text('{"problem": "p",\n')
    with pytest.raises(ValueError, match=rf"{file}:1: invalid JSON"):
        Math500Task(path=file).examples("test")


def test_prompt_template_needs_one_placeholder() -> None:
    with pytest.raises(ValueError, match=r"must contain '\{question\}' exactly once"):
        Gsm8kTask(path=".", prompt_template="Problem: {problem}")


@settings(max_examples=25, deadline=None)
@given(
    n_operands=st.integers(2, 4),
    digits=st.integers(1, 2),
    operators=st.sampled_from(["+", "-", "*", "+-", "-*", "+-*"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_arith_property_disjoint_splits_and_correct_targets(
    n_operands: int, digits: int, operators: str, seed: int
) -> None:
    task = ArithTask(
        n_operands=n_operands, digits=digits, operators=operators, n_train=40, n_test=20, seed=seed
    )
    train, test = task.examples("train"), task.examples("test")
    assert not {e.question for e in train} & {e.question for e in test}
    for example in [*train, *test]:
        assert task.reward(task.target(example), example) == 1.0
        assert len(re.findall(r"\d+", example.question)) == n_operands
