"""MATH-500 (the 500-problem MATH test subset) with the R1-distill prompt (docs/design.md#prompts)."""

import importlib.util
from collections.abc import Mapping

from spo.grading import MATH_CHECKERS, math_answer
from spo.tasks.base import DataPath, Example, Task, fill_template
from spo.tasks.sources import checked_columns, checked_splits, read_rows

REQUEST = (
    "Solve the following math problem efficiently and clearly.  The last line of your response should be "
    "of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' "
    "(without quotes) where ANSWER is just the final number or expression that solves the problem. "
    "Think step by step before answering.\n\n{question}"
)
"""The open-r1 MATH instruction: the user message of a chat-template prompt (`prompt.chat_template`)."""
R1_PROMPT = "<\uff5cbegin\u2581of\u2581sentence\uff5c><\uff5cUser\uff5c>" + REQUEST + "<\uff5cAssistant\uff5c><think>\n"
"""The R1-Distill-Qwen chat prompt of the reference (`configs/prompt_library/qwen_MATH.jsonnet`)."""
ANSWER_LINE = "Therefore, the final answer is: $\\boxed{{answer}}$. I hope it is correct"
"""The final line the R1 prompt asks for; `target()` ends with it."""
FIELDS = ("problem", "solution", "answer")
"""What a MATH row holds (and optionally `unique_id`, which then names the example)."""
HUB_ID = "HuggingFaceH4/MATH-500"


class Math500Task(Task):
    """MATH-500: LaTeX answers, extracted boxed-first and compared by a checker (`MATH_CHECKERS`, time-limited)."""

    name = "math500"
    data_folder = "math500"

    def __init__(
        self,
        path: DataPath | None = None,
        prompt_template: str = R1_PROMPT,
        grading_timeout: float = 5.0,
        unfinished_penalty: float = 0.0,
        multiple_answer_penalty: float = -2.0,
        checker: str = "sympy",
        columns: Mapping[str, str] | None = None,
        splits: Mapping[str, str] | None = None,
    ):
        """Args:
        path: where the rows are (fields `problem`, `solution`, `answer`; optional `unique_id`): a folder
            with `<split>` files, a file or glob used for every split, a mapping {split: file}, or a hub id
            (`spo.tasks.sources`). None loads the hub id `HuggingFaceH4/MATH-500` (needs `datasets` and
            network), which has only "test".
        prompt_template: the prompt text with one `{question}` placeholder.
        grading_timeout: seconds allowed for one answer comparison.
        unfinished_penalty, multiple_answer_penalty: see `Task`.
        checker: a `spo.grading.MATH_CHECKERS` name: "sympy" (this project's) or "math-verify".
        columns: {field: column} where the data names `problem`, `solution` or `answer` otherwise.
        splits: {split: the hub dataset's split name} where they differ.
        """
        super().__init__(unfinished_penalty, multiple_answer_penalty)
        fill_template(prompt_template, "")  # fail now, not at the first prompt
        if checker not in MATH_CHECKERS:
            raise ValueError(f"checker = {checker!r}: expected one of {sorted(MATH_CHECKERS)}")
        if checker == "math-verify" and importlib.util.find_spec("math_verify") is None:
            raise ValueError("checker = 'math-verify' needs the math-verify package: install the project's math extra")
        self.path, self.prompt_template, self.grading_timeout = path, prompt_template, grading_timeout
        self.checker = MATH_CHECKERS[checker]
        self.columns, self.splits = checked_columns(columns, FIELDS, self.name), checked_splits(splits, self.name)

    def load_examples(self, split: str) -> list[Example]:
        if self.path is None and split != "test":
            raise ValueError(f"{self.name}: the hub dataset {HUB_ID} has only a 'test' split; for {split!r} pass "
                             f"path= to files with fields {', '.join(FIELDS)}")
        try:
            _, rows = read_rows(HUB_ID if self.path is None else self.path, split, FIELDS, self.name, self.columns,
                                self.splits)
        except FileNotFoundError as error:
            if split == "test":
                raise
            raise FileNotFoundError(f"{error}; MATH-500 has only a 'test' split, so {split!r} needs a file of "
                                    f"yours with fields {', '.join(FIELDS)}") from None
        return [
            Example(
                id=f"{self.name}/{split}/{row.get('unique_id', index)}",  # unique_id is optional
                question=row["problem"],
                answer=row["answer"],
                solution=row["solution"],
            )
            for index, (_, row) in enumerate(rows)
        ]

    def prompt(self, example: Example) -> str:
        return fill_template(self.prompt_template, example.question)

    def user_message(self, example: Example) -> str:
        return fill_template(REQUEST, example.question)

    def target(self, example: Example) -> str:
        """The reference solution followed by the final line the prompt asks for."""
        return example.solution.strip() + "\n\n" + ANSWER_LINE.replace("{answer}", example.answer)

    def extract_answer(self, response: str) -> str | None:
        return math_answer(response)

    def answers_equal(self, pred: str, gold: str) -> bool:
        return self.checker(pred, gold, timeout=self.grading_timeout)
