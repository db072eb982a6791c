"""Points in the cleaner: the true and the predicted points in pixels of the original picture."""

from __future__ import annotations

from typing import Any, Callable

import torch

from lightcycle.clean.per_task.base import TaskCleaning, task_cleaning
from lightcycle.data.framing import Window
from lightcycle.predict.per_task import task_predictions


@task_cleaning.register("points")
class PointsCleaning(TaskCleaning):
    def values(self, activated: torch.Tensor, target: torch.Tensor, window: Callable[[], Window], size: int) -> tuple[Any, Any]:
        """[[x, y], ...] each, through the same framing as lightcycle-predict's answer."""
        frame = window()
        predictions = task_predictions(self.task)
        true, pred = (predictions.prediction(coords, (frame.width, frame.height), size, frame)[0]
                      for coords in (target[:-1], activated))
        return [[round(v, 2) for v in p] for p in true.tolist()], [[round(v, 2) for v in p] for p in pred.tolist()]
