"""Classification in the cleaner: the actual and the predicted class name."""

from __future__ import annotations

from typing import Any, Callable

import torch

from lightcycle.clean.per_task.base import TaskCleaning, task_cleaning
from lightcycle.data.framing import Window


@task_cleaning.register("classification")
class ClassificationCleaning(TaskCleaning):
    def values(self, activated: torch.Tensor, target: torch.Tensor, window: Callable[[], Window], size: int) -> tuple[Any, Any]:
        names = self.task.class_names
        return names[int(target)], names[int(activated.argmax())]
