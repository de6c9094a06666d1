"""Task registry: name -> factory. `register_task` adds one for the process that calls it (a launcher
script for `spo run`, `stage`, `inspect`, `eval`); `spo compare` and `spo serve` start fresh `spo`
processes, which see only the tasks registered here (docs/tutorial.md).

>>> task = make_task("arith", n_train=4, n_test=2)
>>> example = task.examples("test")[0]
>>> task.reward(task.target(example), example), task.reward(" 1+1=2. #### 2", example)
(1.0, 0.0)
"""

from collections.abc import Callable

from spo.tasks.arith import ArithTask
from spo.tasks.base import Example, Task
from spo.tasks.gsm8k import Gsm8kTask
from spo.tasks.math500 import Math500Task

TASKS: dict[str, Callable[..., Task]] = {"arith": ArithTask, "gsm8k": Gsm8kTask, "math500": Math500Task}


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Add a task factory under a new name (a name already taken is an error, never an overwrite)."""
    if name in TASKS:
        raise ValueError(f"task {name!r} is already registered (as {TASKS[name]!r}); choose another name")
    TASKS[name] = factory


def make_task(name: str, **options) -> Task:
    """Build a registered task; options go to its factory (e.g. `make_task("arith", seed=1)`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "ArithTask", "Example", "Gsm8kTask", "Math500Task", "Task", "make_task", "register_task"]
