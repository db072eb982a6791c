"""Multi-label in the cleaner: the actual tags and the tags over their decision thresholds."""

from __future__ import annotations

from typing import Any, Callable

import torch

from lightcycle.clean.per_task.base import TaskCleaning, task_cleaning
from lightcycle.data.framing import Window


@task_cleaning.register("multilabel")
class MultiLabelCleaning(TaskCleaning):
    def values(self, activated: torch.Tensor, target: torch.Tensor, window: Callable[[], Window], size: int) -> tuple[Any, Any]:
        names = self.task.class_names
        decided = self.task.decode(activated[None])[0]
        return ([n for n, on in zip(names, target.bool().tolist()) if on],
                [n for n, on in zip(names, decided.tolist()) if on])
