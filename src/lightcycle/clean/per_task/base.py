"""The cleaner's view of a task's outputs: the interface and its default."""

from __future__ import annotations

from typing import Any, Callable

import torch

from lightcycle.data.framing import Window
from lightcycle.tasks.base import Task
from lightcycle.tasks.per_task import PerTask


class TaskCleaning:
    """An image's label and prediction as the data cleaner lists and edits them; subclasses in this
    package register per task name."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def values(self, activated: torch.Tensor, target: torch.Tensor, window: Callable[[], Window], size: int) -> tuple[Any, Any]:
        """(label, prediction) as plain JSON data, from one image's activated output and its target as
        the DataModule encodes it. `window()` reads the part of the original picture its `size` x `size`
        input showed (tasks that answer in original pixels). The default gives neither."""
        return None, None


task_cleaning: PerTask[TaskCleaning] = PerTask("lightcycle.clean.per_task", TaskCleaning)
