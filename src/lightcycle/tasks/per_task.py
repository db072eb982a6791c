"""Per-task behaviour that belongs to a consumer of tasks, found by the task's registered name.

A task defines its outputs (head, loss, metrics, activation, decoding); what a consumer does with
them (interpretation's tables and figures, prediction's records, export's metadata, a drawn
training sample) lives beside that consumer, one file per task:

    records = PerTask("lightcycle.predict.per_task", TaskRecords)   # the consumer's registry

    @records.register("classification")                             # predict/per_task/classification.py
    class ClassificationRecords(TaskRecords): ...

    records(task).prediction_record(...)                            # the consumer asks by task

A task without a registered class gets the consumer's base class (its defaults); a class not
registered yet is looked up in `<package>.<task name>` first, as `task_from_config` finds task files.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from lightcycle.tasks.base import Task

B = TypeVar("B")


class PerTask(Generic[B]):
    """One consumer's per-task classes, by task name; calling it with a task gives that task's behaviour."""

    def __init__(self, package: str, base: Callable[[Task], B]) -> None:
        self.package = package
        self.base = base
        self.classes: dict[str, Callable[[Task], B]] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Decorate the class that gives task `name`'s behaviour to this consumer."""

        def add(cls: type) -> type:
            self.classes[name] = cls
            return cls

        return add

    def __call__(self, task: Task) -> B:
        """`task`'s behaviour (the consumer's defaults when no class is registered for it)."""
        name = task.name
        if name not in self.classes and name.isidentifier():
            try:
                importlib.import_module(f"{self.package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{self.package}.{name}":  # the file exists but needs something missing
                    raise
        return self.classes.get(name, self.base)(task)
