"""A multi-label sample: its picture under its tags ("-" for none)."""

from __future__ import annotations

import torch

from lightcycle.data.show.base import TaskSamples, task_samples
from lightcycle.tasks.multilabel import tags_text


@task_samples.register("multilabel")
class MultiLabelSamples(TaskSamples):
    def target_text(self, target: torch.Tensor) -> str:
        return tags_text(self.task.class_names, target.bool()) or "-"
