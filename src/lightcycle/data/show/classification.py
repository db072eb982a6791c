"""A classification sample: its picture under its class name."""

from __future__ import annotations

import torch

from lightcycle.data.show.base import TaskSamples, task_samples


@task_samples.register("classification")
class ClassificationSamples(TaskSamples):
    def target_text(self, target: torch.Tensor) -> str:
        return self.task.class_names[int(target)]
