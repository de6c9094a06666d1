"""Synthetic multi-step integer arithmetic with a short chain of thought: the CPU demo's task.

Prompt `Q: 27+82+18= A:`, target ` 27+82=109; 109+18=127. #### 127` (docs/design.md#warm-start). The chain
evaluates left to right, so with `*` the answer is the chain's value, not the usual precedence.
"""

import random
import re
from collections.abc import Sequence

from spo.grading import marked_answer
from spo.tasks.base import Example, Task

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def chain_solution(operands: list[int], operators: str) -> str:
    """The left-to-right chain of thought and final line for operands joined by operators.

    Args:
        operands: n >= 2 integers.
        operators: n - 1 characters from "+-*".

    >>> chain_solution([27, 82, 18], "++")
    '27+82=109; 109+18=127. #### 127'
    >>> chain_solution([12, 30, 4], "-*")  # 12-30=-18; -18*4=-72
    '12-30=-18; -18*4=-72. #### -72'
    """
    steps, value = [], operands[0]
    for operator, operand in zip(operators, operands[1:], strict=True):
        result = _OPERATIONS[operator](value, operand)
        steps.append(f"{value}{operator}{operand}={result}")
        value = result
    return "; ".join(steps) + f". #### {value}"


class ArithTask(Task):
    """Seeded arithmetic problems; the test split is drawn first, so it does not change with n_train."""

    name = "arith"
    unique_target = True  # the left-to-right chain is determined by the question

    def __init__(
        self,
        n_operands: int = 3,
        digits: int = 2,
        operators: str = "+",
        n_train: int = 20000,
        n_test: int = 512,
        seed: int = 0,
        unfinished_penalty: float = 0.0,
        multiple_answer_penalty: float = -2.0,
    ):
        """Args:
        n_operands: numbers per problem (>= 2).
        digits: digits per operand (10..99 for 2; 0..9 for 1).
        operators: the operators to draw from, any of "+-*".
        n_train, n_test: problems per split; no question is in both.
        seed: the generator seed (same seed, same problems).
        unfinished_penalty, multiple_answer_penalty: see `Task`.
        """
        super().__init__(unfinished_penalty, multiple_answer_penalty)
        if n_operands < 2 or digits < 1:
            raise ValueError(f"arith: need n_operands >= 2 and digits >= 1, got {n_operands} and {digits}")
        if not operators or set(operators) - set(_OPERATIONS) or len(set(operators)) != len(operators):
            raise ValueError(f"arith: operators must be distinct characters of {''.join(_OPERATIONS)!r}, "
                             f"got {operators!r}")  # fmt: skip
        self.n_operands, self.digits, self.operators, self.seed = n_operands, digits, operators, seed
        self.low = 10 ** (digits - 1) if digits > 1 else 0
        n_values = 10**digits - self.low
        self.n_questions = n_values**n_operands * len(operators) ** (n_operands - 1)
        if min(n_train, n_test) < 0 or n_train + n_test > self.n_questions:
            raise ValueError(f"arith: n_train + n_test = {n_train} + {n_test} must be >= 0 and at most the "
                             f"{self.n_questions} distinct questions of {n_operands} operands with {digits} "
                             f"digits and operators {operators!r}")  # fmt: skip
        self.split_sizes = {"test": n_test, "train": n_train}

    def alphabet(self) -> str:
        """Every character a prompt or target can contain (for a character-level tokenizer), sorted.

        >>> ArithTask(operators="+-").alphabet()
        ' #+-.0123456789:;=AQ'
        """
        return "".join(sorted(set("0123456789 Q:=A;.#" + self.operators)))  # "-" for negatives comes with "-"

    def load_examples(self, split: str) -> Sequence[Example]:
        """Draw distinct question indices: the first n_test are the test split, the next n_train train.

        Examples are built when read (a stage reads a few dozen of 20000).
        """
        rng, seen, order = random.Random(self.seed), set(), []
        needed = self.split_sizes["test"] + (self.split_sizes["train"] if split == "train" else 0)
        while len(order) < needed:
            index = rng.randrange(self.n_questions)
            if index not in seen:
                seen.add(index)
                order.append(index)
        chosen = order[: self.split_sizes["test"]] if split == "test" else order[self.split_sizes["test"] :]
        return _Examples(self, split, chosen)

    def _example(self, split: str, row: int, index: int) -> Example:
        """Decode a question index (mixed radix: operands, then operators) into an Example."""
        n_values, operands, operators = 10**self.digits - self.low, [], []
        for _ in range(self.n_operands):
            index, value = divmod(index, n_values)
            operands.append(self.low + value)
        for _ in range(self.n_operands - 1):
            index, choice = divmod(index, len(self.operators))
            operators.append(self.operators[choice])
        question = "".join(f"{a}{op}" for a, op in zip(operands, operators)) + str(operands[-1])
        solution = chain_solution(operands, "".join(operators))
        return Example(id=f"{self.name}/{split}/{row}", question=question,
                       answer=solution.rsplit("#### ", 1)[1], solution=solution)  # fmt: skip

    def prompt(self, example: Example) -> str:
        return f"Q: {example.question}= A:"

    def target(self, example: Example) -> str:
        return " " + example.solution

    def extract_answer(self, response: str) -> str | None:
        return marked_answer(response)

    def answers_equal(self, pred: str, gold: str) -> bool:
        """Integer comparison; anything that is not an integer is wrong."""
        return re.fullmatch(r"-?\d+", pred) is not None and int(pred) == int(gold)


class _Examples(Sequence):
    """The examples of a split, each built from its question index when read."""

    def __init__(self, task: ArithTask, split: str, indices: list[int]):
        self.task, self.split, self.indices = task, split, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(len(self)))]
        if not -len(self) <= row < len(self):
            raise IndexError(f"arith {self.split}: row {row} out of range for {len(self)} examples")
        row %= len(self)
        return self.task._example(self.split, row, self.indices[row])

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None
