"""GSM8K (grade-school math word problems) in the original `#### N` answer format (docs/design.md#prompts)."""

import re
from pathlib import Path

from spo.grading import extract_answer, gsm8k_equal
from spo.tasks.base import DataPath, Example, Task, fill_template, hub_rows, read_jsonl, split_file

RHO_PROMPT = "[MATH_TASK] Problem:\n{question}\n\nSolution:"
"""The Rho-1B SFT prompt of the reference (`configs/tasks/gsm8k_orig_format.jsonnet`)."""


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
    ):
        """Args:
        path: a directory with `train.jsonl` / `test.jsonl` (fields `question`, `answer`), one such file
            (used for every split), or a mapping {split: file}; None loads the hub id `openai/gsm8k`
            (config "main"), which needs the `datasets` package and network.
        prompt_template: the prompt text with one `{question}` placeholder.
        unfinished_penalty, multiple_answer_penalty: see `Task`.
        """
        super().__init__(unfinished_penalty, multiple_answer_penalty)
        fill_template(prompt_template, "")  # fail now, not at the first prompt
        self.path, self.prompt_template = path, prompt_template

    def load_examples(self, split: str) -> list[Example]:
        if self.path is None:
            source, rows = f"hub:openai/gsm8k/{split}", hub_rows("openai/gsm8k", "main", split, self.name)
        else:
            file = split_file(self.path, split, self.name)
            source, rows = str(file), read_jsonl(Path(file), ("question", "answer"))
        return [self._example(split, index, number, row, source) for index, (number, row) in enumerate(rows)]

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

    def target(self, example: Example) -> str:
        """The solution without calculator notes, ending `#### N`, after one space (the prompt ends `Solution:`)."""
        return " " + remove_calculator_notes(example.solution).strip()

    def extract_answer(self, response: str) -> str | None:
        return extract_answer(response, "gsm8k")

    def answers_equal(self, pred: str, gold: str) -> bool:
        return gsm8k_equal(pred, gold)
