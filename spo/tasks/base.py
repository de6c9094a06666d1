"""What every task provides: examples, prompts, reference responses, answer extraction and the reward.

The reward follows docs/design.md#rewards: a response stopped by the length limit
scores `unfinished_penalty`; more than one `####` final-answer marker scores `multiple_answer_penalty`;
no extractable answer scores `unfinished_penalty`; otherwise 1 if correct else 0. For Monte-Carlo
values the caller passes the whole answer text (response prefix + continuation, docs/design.md#mc-rewards).
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
DataPath = str | Path | Mapping[str, str | Path]


@dataclass(frozen=True)
class Example:
    """One problem of a task."""

    id: str
    """Stable and unique, `<task>/<split>/<row>` (row 0 is the first row of the file), e.g. `gsm8k/test/17`."""
    question: str
    """The problem text as in the data."""
    answer: str
    """The gold final answer as a string."""
    solution: str
    """The reference worked solution as in the data."""


class Task(ABC):
    """A dataset plus its prompt format and grader. Subclasses set `name` and the abstract methods."""

    name: str
    data_folder: str | None = None
    """Folder name of the task's files under a data root (e.g. `gsm8k`); None for generated tasks. Only a task
    with one reads `task.data` (where its rows are); set for another task, that field is refused
    (`spo.config.unread_fields`)."""
    unique_target = False
    """True when `target()` is the only correct response (arith), so the first token of a sampled response
    that leaves it is the first wrong token (the credit probe, spo/credit.py)."""
    answer_marker = "####"
    """More than one of these in a response scores `multiple_answer_penalty` (checked for every task, as in
    the reference)."""

    def __init__(self, unfinished_penalty: float = 0.0, multiple_answer_penalty: float = -2.0):
        """Args:
        unfinished_penalty: reward of a response cut by the length limit or without a final answer.
        multiple_answer_penalty: reward of a response with more than one `####` (reference: -2).
        """
        self.unfinished_penalty = unfinished_penalty
        self.multiple_answer_penalty = multiple_answer_penalty
        self._examples: dict[str, Sequence[Example]] = {}
        self._index: dict[str, dict[str, Example]] = {}

    def examples(self, split: str) -> Sequence[Example]:
        """The examples of a split ("train" or "test"), loaded once per task object; row r has id
        `<task>/<split>/<r>`."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; choose one of {sorted(SPLITS)}")
        if split not in self._examples:
            self._examples[split] = self.load_examples(split)
        return self._examples[split]

    def example(self, example_id: str) -> Example:
        """The example with this id, `<task>/<split>/<row or key>`: by row without building the other
        examples of the split, else through an index of the split built once per task object."""
        parts = example_id.split("/", 2)
        if len(parts) != 3 or parts[1] not in SPLITS:
            raise KeyError(f"{self.name}: {example_id!r} is not an example id (<task>/<split>/<row>)")
        _, split, row = parts
        examples = self.examples(split)
        if row.isdigit() and int(row) < len(examples):
            candidate = examples[int(row)]  # arith builds an example when indexed: once
            if candidate.id == example_id:
                return candidate
        if split not in self._index:
            self._index[split] = {e.id: e for e in examples}
        if example_id not in self._index[split]:
            raise KeyError(f"{self.name}: no example {example_id!r} in split {split!r}")
        return self._index[split][example_id]

    @abstractmethod
    def load_examples(self, split: str) -> Sequence[Example]:
        """Read or generate the examples of a split (already checked to be one of SPLITS)."""

    @abstractmethod
    def prompt(self, example: Example) -> str:
        """The formatted prompt text the policy continues."""

    def user_message(self, example: Example) -> str:
        """The user message of a chat-template prompt (`prompt.chat_template`): by default the plain prompt;
        a task whose prompt carries a model's own chat markup gives the bare request instead."""
        return self.prompt(example)

    @abstractmethod
    def target(self, example: Example) -> str:
        """The reference response in the task's answer format (what follows `prompt()`; for SFT warm start)."""

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer written in a response, or None."""

    @abstractmethod
    def answers_equal(self, pred: str, gold: str) -> bool:
        """Whether an extracted answer equals the gold answer."""

    def is_correct(self, response: str, example: Example) -> bool:
        """Whether the response's final answer equals the example's gold answer."""
        pred = self.extract_answer(response)
        return pred is not None and self.answers_equal(pred, example.answer)

    def grade(self, response: str, example: Example, finished: bool = True) -> tuple[float, bool]:
        """The scalar reward of one response and whether its final answer is right, comparing once
        (docs/design.md#rewards).

        Args:
            response: the prompt-free response text (for MC values: prefix + continuation).
            example: the problem it answers.
            finished: False when generation stopped at the length limit.
        """
        pred = self.extract_answer(response)
        correct = pred is not None and self.answers_equal(pred, example.answer)
        penalty = self._penalty(response, pred, finished)
        return (float(correct) if penalty is None else penalty), correct

    def reward(self, response: str, example: Example, finished: bool = True) -> float:
        """The scalar reward of one response (`grade`), comparing answers only when the reward depends on
        it: MC continuations are graded by the thousand, and a MATH comparison can take seconds."""
        pred = self.extract_answer(response)
        penalty = self._penalty(response, pred, finished)
        return float(self.answers_equal(pred, example.answer)) if penalty is None else penalty

    def _penalty(self, response: str, pred: str | None, finished: bool) -> float | None:
        """The reward of a response whose answer is not compared: cut at the length limit, with more than
        one answer marker, or with no answer; None when the comparison decides."""
        if not finished:
            return self.unfinished_penalty
        if response.count(self.answer_marker) > 1:
            return self.multiple_answer_penalty
        if pred is None:
            return self.unfinished_penalty
        return None

    def corpus(self, split: str) -> Iterator[str]:
        """Prompt + target texts of a split (for building tokenizers)."""
        for example in self.examples(split):
            yield self.prompt(example) + self.target(example)


def fill_template(template: str, question: str) -> str:
    """Put the question into a prompt template at its single `{question}` (other braces stay literal).

    >>> fill_template("Q: {question}\\nA: $\\\\boxed{ANSWER}$", "1+1?")
    'Q: 1+1?\\nA: $\\\\boxed{ANSWER}$'
    """
    if template.count("{question}") != 1:
        raise ValueError(f"prompt template must contain '{{question}}' exactly once, got {template!r}")
    return template.replace("{question}", question)
