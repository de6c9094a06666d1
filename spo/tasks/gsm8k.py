"""GSM8K (grade-school math word problems) in the original `#### N` answer format (docs/design.md#prompts)."""

import re
from collections.abc import Mapping

from spo.grading import gsm8k_equal, marked_answer
from spo.tasks.base import DataPath, Example, Task, fill_template
from spo.tasks.sources import checked_columns, checked_splits, read_rows

RHO_PROMPT = "[MATH_TASK] Problem:\n{question}\n\nSolution:"
"""The Rho-1B SFT prompt of the reference (`configs/tasks/gsm8k_orig_format.jsonnet`)."""
FIELDS = ("question", "answer")
"""What a GSM8K row holds: the problem, and the worked solution ending `#### N`."""
HUB_ID = "openai/gsm8k"
REQUEST = ("{question}\n\nSolve the problem step by step. End your response with a line of the form "
           "'#### ANSWER', where ANSWER is just the final number.")
"""The user message of a chat-template prompt (`prompt.chat_template`): it asks for the `#### N` line the
grader reads."""


def remove_calculator_notes(solution: str) -> str:
    """Drop GSM8K's `<<48/2=24>>` calculator annotations, as the reference does for its SFT targets.

    >>> remove_calculator_notes("Natalia sold 48/2 = <<48/2=24>>24 clips in May.")
    'Natalia sold 48/2 = 24 clips in May.'
    """
    return re.sub(r"<<[^<>]*>>", "", solution)


class Gsm8kTask(Task):
    """GSM8K: prompt `[MATH_TASK] Problem:\\n...\\n\\nSolution:`, response ` <steps>\\n#### N`."""

    name = "gsm8k"
    data_folder = "gsm8k"

    def __init__(
        self,
        path: DataPath | None = None,
        prompt_template: str = RHO_PROMPT,
        unfinished_penalty: float = 0.0,
        multiple_answer_penalty: float = -2.0,
        columns: Mapping[str, str] | None = None,
        splits: Mapping[str, str] | None = None,
    ):
        """Args:
        path: where the rows are (fields `question`, `answer`): a folder with `train` / `test` files, a
            file or glob used for every split, a mapping {split: file}, or a hub id (`spo.tasks.sources`);
            None loads the hub id `openai/gsm8k` (config "main"), which needs `datasets` and network.
        prompt_template: the prompt text with one `{question}` placeholder.
        unfinished_penalty, multiple_answer_penalty: see `Task`.
        columns: {field: column} where the data names `question` or `answer` otherwise.
        splits: {split: the hub dataset's split name} where they differ.
        """
        super().__init__(unfinished_penalty, multiple_answer_penalty)
        fill_template(prompt_template, "")  # fail now, not at the first prompt
        self.path, self.prompt_template = path, prompt_template
        self.columns, self.splits = checked_columns(columns, FIELDS, self.name), checked_splits(splits, self.name)

    def load_examples(self, split: str) -> list[Example]:
        source, config = (HUB_ID, "main") if self.path is None else (self.path, None)
        where, rows = read_rows(source, split, FIELDS, self.name, self.columns, self.splits, hub_config=config)
        return [self._example(split, index, number, row, where) for index, (number, row) in enumerate(rows)]

    def _example(self, split: str, index: int, number: int, row: dict, source: str) -> Example:
        if "####" not in row["answer"]:
            raise ValueError(
                f"{source}:{number}: field 'answer' has no '#### N' final line: {row['answer'][-80:]!r}"
            )
        gold = row["answer"].rsplit("####", 1)[1].strip()
        return Example(
            id=f"{self.name}/{split}/{index}", question=row["question"], answer=gold, solution=row["answer"]
        )

    def prompt(self, example: Example) -> str:
        return fill_template(self.prompt_template, example.question)

    def user_message(self, example: Example) -> str:
        return fill_template(REQUEST, example.question)

    def target(self, example: Example) -> str:
        """The solution without calculator notes, ending `#### N`, after one space (the prompt ends `Solution:`)."""
        return " " + remove_calculator_notes(example.solution).strip()

    def extract_answer(self, response: str) -> str | None:
        return marked_answer(response)

    def answers_equal(self, pred: str, gold: str) -> bool:
        return gsm8k_equal(pred, gold)
