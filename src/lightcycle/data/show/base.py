"""How a training sample of a task is drawn: the interface and its defaults (the target as text)."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.tasks.base import Task
from lightcycle.tasks.per_task import PerTask


class TaskSamples:
    """How one task's training samples are drawn; subclasses in this package register per task name."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """Draw one training sample (`image`: HxWx3 uint8 as the model sees it, `target` as the
        DataModule encodes it) into `ax` and return its title; image-level tasks write the label."""
        ax.imshow(image)
        return self.target_text(target)

    def target_text(self, target: torch.Tensor) -> str:
        """A target as words (the class name, the tags), for titles."""
        return str(target.tolist())


task_samples: PerTask[TaskSamples] = PerTask("lightcycle.data.show", TaskSamples)
