"""Time the graders on the real data.

    python benchmarks/grading.py [--data DIR]   (default: the data folder beside the checkout)

Prints the seconds to grade all 500 MATH-500 reference solutions against their `answer` field
(extraction + math_equal; target < 20 s), the same 500 answers each compared with a different
answer (mostly unequal: 169 of the pairs reach the structure and sympy path), that again through a
`SympyWorker` child process (what a worker thread pays), and all GSM8K reference solutions.
"""

import argparse
import json
import time
from pathlib import Path

from spo.grading import SympyWorker, math_answer, math_equal
from spo.tasks import Gsm8kTask

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(label: str, grade, pairs: list) -> None:
    """Grade every pair, print the count equal, total seconds and ms per pair."""
    started = time.perf_counter()
    n_equal = sum(bool(grade(*pair)) for pair in pairs)
    seconds = time.perf_counter() - started
    print(
        f"{label:<58} {n_equal:>5}/{len(pairs):<5} equal  {seconds:7.2f} s  {1000 * seconds / len(pairs):7.2f} ms/pair"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding math500/ and gsm8k/")
    data = parser.parse_args().data
    rows = [json.loads(line) for line in (data / "math500" / "test.jsonl").read_text().splitlines()]
    answers = [row["answer"] for row in rows]

    timed("MATH-500: reference solution vs answer (extract + equal)",
          lambda solution, gold: math_equal(math_answer(solution), gold),
          [(row["solution"], row["answer"]) for row in rows])  # fmt: skip
    different = list(zip(answers, answers[1:] + answers[:1]))
    timed("MATH-500: answer vs the next row's answer (mostly unequal)", math_equal, different)
    with SympyWorker() as worker:
        worker.call(abs, (1,), seconds=120.0)  # start the child before timing
        timed("MATH-500: same, in a SympyWorker child process",
              lambda pred, gold: math_equal(pred, gold, worker=worker), different)  # fmt: skip

    gsm8k = Gsm8kTask(path=data / "gsm8k")
    examples = gsm8k.examples("train") + gsm8k.examples("test")
    timed("GSM8K: reference solution reward (train + test)",
          lambda example: gsm8k.reward(gsm8k.target(example), example) == 1.0, [(e,) for e in examples])  # fmt: skip


if __name__ == "__main__":
    main()
