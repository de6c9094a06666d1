"""Tasks read your own data: JSON lines, JSON, Parquet and CSV files, globs, `{split}` names and other
column names give the examples the built-in files give; bad rows are named by file, row and field; and a
run on Parquet files goes through the Prefect flow.

Real GSM8K and MATH-500 rows throughout, written here in each format. The hub branch needs network (not
reachable here): only its error without `datasets` is tested (tests/test_tasks.py).
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from spo.config import ConfigError
from spo.tasks import Gsm8kTask, Math500Task
from stages.runtime.run_dir import create_run, load_preset

RENAMED = {"question": "prompt", "answer": "reference"}
"""Column names a user's GSM8K copy might use."""


def gsm8k_rows(shared_data: Path, n: int = 12) -> list[dict]:
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:n]
    return [{RENAMED[k]: v for k, v in json.loads(line).items()} for line in lines]


def write(rows: list[dict], path: Path) -> Path:
    """Rows in the format the suffix names."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_format_gives_the_examples_of_the_built_in_files(shared_data, tmp_path, suffix):
    expected = Gsm8kTask(path=shared_data / "gsm8k").examples("test")[:12]
    file = write(gsm8k_rows(shared_data), tmp_path / f"mine{suffix}")
    task = Gsm8kTask(path=file, columns={"question": "prompt", "answer": "reference"})
    assert task.examples("test") == expected  # ids, questions, gold answers and solutions
    assert task.examples("train") == [e.__class__(e.id.replace("/test/", "/train/"), e.question, e.answer,
                                                  e.solution) for e in expected]  # a file serves every split


def test_globs_and_split_names(shared_data, tmp_path):
    rows = gsm8k_rows(shared_data)
    write(rows[:5], tmp_path / "test-000.parquet")
    write(rows[5:], tmp_path / "test-001.parquet")
    write(rows[:3], tmp_path / "train-000.csv")
    task = Gsm8kTask(path=str(tmp_path / "{split}-*"), columns=RENAMED | {})
    assert [e.question for e in task.examples("test")] == [r["prompt"] for r in rows]
    assert [e.id for e in task.examples("test")] == [f"gsm8k/test/{i}" for i in range(12)]
    assert [e.question for e in task.examples("train")] == [r["prompt"] for r in rows[:3]]
    folder = tmp_path / "folder"
    folder.mkdir()
    write([{"problem": "1+1?", "solution": "$\\boxed{2}$", "answer": "2"}], folder / "test.parquet")
    (example,) = Math500Task(path=folder).examples("test")
    assert (example.question, example.answer) == ("1+1?", "2")


def test_bad_columns_and_rows_are_named_by_file_row_and_field(shared_data, tmp_path):
    rows = gsm8k_rows(shared_data, 3)
    parquet = write(rows, tmp_path / "mine.parquet")
    with pytest.raises(ValueError, match=rf"{parquet}: missing column 'question' \(expected \['question', "
                                         rf"'answer'\], got \['prompt', 'reference'\]\)"):
        Gsm8kTask(path=parquet).examples("test")
    rows[1]["reference"] = None
    nulls = write(rows, tmp_path / "nulls.parquet")
    with pytest.raises(ValueError, match=rf"{nulls}:2: field 'reference' is NoneType, expected a string"):
        Gsm8kTask(path=nulls, columns=RENAMED).examples("test")
    csv = write(gsm8k_rows(shared_data, 2), tmp_path / "mine.csv")
    with pytest.raises(ValueError, match=rf"{csv}: missing column 'answer'"):
        Gsm8kTask(path=csv, columns={"question": "prompt"}).examples("test")
    with pytest.raises(FileNotFoundError, match=r"the glob matches no"):
        Gsm8kTask(path=str(tmp_path / "none-*.parquet")).examples("test")
    with pytest.raises(ValueError, match=r"columns = \{'prompt': 'question'\}: expected \{field: column name\} "
                                         r"with fields among \['question', 'answer'\]"):
        Gsm8kTask(columns={"prompt": "question"})
    with pytest.raises(ConfigError, match=r"task.options = .* for task 'gsm8k': splits = \{'dev': 'validation'\}"):
        load_preset("tiny").with_overrides(["task.name=gsm8k", 'task.options={"splits": {"dev": "validation"}}'])


def test_a_run_on_parquet_files_goes_through_the_flow(prefect_harness, shared_data, tmp_path):
    from flows.spo_run import spo_run
    from stages.reports.summary import iteration_summary
    from tests.helpers import GSM8K, TINY_OVERRIDES

    for split in ("train", "test"):
        lines = (shared_data / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:40]
        write([{RENAMED[k]: v for k, v in json.loads(line).items()} for line in lines],
              tmp_path / f"gsm8k-{split}.parquet")
    columns = json.dumps({"columns": RENAMED})
    cfg = load_preset("tiny").with_overrides(
        [*TINY_OVERRIDES, *GSM8K, f"task.options={columns}", f"task.data={tmp_path / 'gsm8k-{split}.parquet'}"])
    run = create_run(tmp_path / "run", cfg)
    assert spo_run(str(run.root), return_state=True).is_completed()
    rows = iteration_summary(run)
    assert [r["iteration"] for r in rows] == [0, 1] and rows[0]["sampled_tokens"] > 0
    prompts = pq.read_table(run.artifact(0, "prompts")).to_pylist()
    questions = {json.loads(line)["question"] for line in
                 (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:40]}
    assert prompts and all(p["prompt_text"].removeprefix("[MATH_TASK] Problem:\n").removesuffix("\n\nSolution:")
                           in questions for p in prompts)
