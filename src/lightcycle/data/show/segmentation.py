"""A segmentation sample: its mask over the picture, one colour per code, titled with the codes present."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightcycle import drawing
from lightcycle.data.show.base import TaskSamples, task_samples


@task_samples.register("segmentation")
class SegmentationSamples(TaskSamples):
    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """The mask over its picture, one colour per code (void pixels show the plain picture)."""
        task = self.task
        mask = target.long().numpy()
        ax.imshow(drawing.overlay(image, mask, drawing.palette(task.num_classes), task.void_index, alpha=0.6))
        present = [task.class_names[c] for c in np.unique(mask) if 0 <= c < task.num_classes and c != task.void_index]
        return ", ".join(present)
